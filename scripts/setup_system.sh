#!/usr/bin/env bash
# Install the system tools that `bestrq2 data` needs to build its audio corpus and suite.
#
# Idempotent and non-interactive: safe to run on every CI start. Needs root (or sudo).
#   - adds Debian's contrib and non-free components (mbrola and pico live there), reusing the
#     mirror the machine already uses;
#   - installs the speech synthesisers (espeak-ng, mbrola with English-capable voices, pico);
#   - pip-installs tinysoundfont without its optional pyaudio dependency (it cannot be
#     declared in pyproject.toml, because pip would then try to build pyaudio).
# Data-only packages (SoundFonts, game and education sound packs) are NOT installed here: the
# Python builder downloads and unpacks them itself with `apt-get download` + `dpkg-deb -x`.
#
# Usage: scripts/setup_system.sh [--small]      (--small installs only 4 mbrola voices)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

SMALL=0
for arg in "$@"; do
  case "$arg" in
    --small) SMALL=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup_system.sh: needs root (or sudo) to run apt-get" >&2; exit 1
  fi
fi

# Keep this list in sync with bestrq2/corpora/tts.py (MBROLA_VOICES, SMALL_MBROLA_VOICES).
VOICES_SMALL="us1 us2 en1 de1"
VOICES_FULL="us1 us2 us3 en1 af1 de1 de2 de3 de4 de5 de6 fr1 fr4 gr2 hu1 nl2 pl1 ro1 sw1 sw2"
if [ "$SMALL" = 1 ]; then VOICES="$VOICES_SMALL"; else VOICES="$VOICES_FULL"; fi

PKGS="espeak-ng mbrola libttspico-utils"
for v in $VOICES; do PKGS="$PKGS mbrola-$v"; done

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
  LIST=/etc/apt/sources.list.d/bestrq2-contrib-nonfree.sources
  if [ ! -f "$LIST" ]; then
    # Reuse the first Debian mirror URI the image is configured with.
    uri=""
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      uri=$(awk '/^URIs:/ {print $2; exit}' "$f")
      [ -n "$uri" ] && break
    done
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
      uri=$(awk '$1 == "deb" && $0 !~ /security/ {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list)
    fi
    [ -n "$uri" ] || { echo "setup_system.sh: cannot find the Debian mirror in apt's sources" >&2; exit 1; }
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" "$codename" | $SUDO tee "$LIST" >/dev/null
    echo "setup_system.sh: added contrib/non-free from $uri ($codename)"
  fi
  $SUDO apt-get update -qq
  echo "setup_system.sh: installing$missing"
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PY="${PYTHON:-python3}"
if ! "$PY" -c "import tinysoundfont" >/dev/null 2>&1; then
  echo "setup_system.sh: pip-installing tinysoundfont (--no-deps)"
  "$PY" -m pip install -q --no-deps "tinysoundfont==0.3.7"
fi
echo "setup_system.sh: system tools ready"
