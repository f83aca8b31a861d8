"""Environment: the suite's sound-event task and the corpus's environmental sound.

Suite
- sound_events (5 classes: animal, human, instrument, machine, household) from Scratch's labelled sound
  library, qaBCs' named noises and Tux Paint's stamp sounds; group = source file (all crops of a file stay
  in one split).

Corpus
- the labelled and unlabelled effect files that no suite test split uses, strung into ~20 s clips;
- synthetic scenes: 20-40 s of a noise bed with such files dropped in at random times and levels.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import soundfile as sf

from bestrq2.corpora.items import CorpusItem, SuiteItem, file_id, stable_seed

SCRATCH_DIR = "usr/share/scratch/Media/Sounds"
QABCS_NOISES = "usr/share/qabcs/abcs/all/noises"
TUXPAINT_STAMPS = "usr/share/tuxpaint/stamps"
CROP_S = 5.0
MAX_CROPS = 3

SCRATCH_FOLDERS = {
    "Animal": "animal",
    "Human": "human",
    "Instruments": "instrument",
    "Percussion": "instrument",
}
SCRATCH_EFFECTS = {"CarPassing": "machine", "MotorcyclePassing": "machine", "SewingMachine": "machine",
                   "Typing": "machine", "BellToll": "instrument"}  # fmt: skip
"""Scratch 'Effects' not listed here are household sounds (doors, water, pops)."""

_QABCS = {
    "animal": """crow sparrow moose guinea_fowl albatross emu hyena turtle iguana quetzal wolf flamingo wood_grouse
        pheasant sheep hamster pig squirrel ferret mouse otter blister_beetle stork urchin zebra elephant weevil frog
        raccoon spider whale giant_panda porcupine wallaby adjutant chinchilla hedgehog goose rooster rhinoceros snail
        bird deer lynx heron owl calf giraffe aesculapian_snake vulture iora newt eagle-owl pelican booby moth fish dog
        foal grasshopper lion jaguar chimpanzee quail jerboa tiger yak koala little_monkey duck dolphin horse cat bear
        cow ladybug python""",
    "instrument": """ney bass_drum western_concert_flute cuica harp cello harmonica oboe quena hand_organ washint horn
        trumpet recorder flute cymbals bagpipes xun piano rozhok natural_horn drums rabel grand_piano dulzaina guitar
        changu lute zither xylophone yueqin slit_drum gamba electric_guitar kazoo accordion erhu zurna organ yangqin
        squeezebox zhaleyka topshuur timpani ukulele maracas saxophone clarinet violin spoons hang ratchet""",
    "machine": "airplane helicopter tractor train excavator rocket quadrocopter bicycle skateboard security_camera",
    "household": """jar chalkboard vase boot newspaper pen paper_airplane lunchbox button magnifying_glass easel watch
        clock dice umbrella zipper camera_lens keyboard magnet whistle glove necklace anklet balloons yoyo top kite
        seesaw rocking_horse jump_rope volleyball football hockey rubber_ball ice_skate watercolor paint hat""",
}
QABCS_LABELS = {name: label for label, names in _QABCS.items() for name in names.split()}

TUXPAINT_RULES = (
    (r"^animals/", "animal"),
    (r"^hobbies/music/", "instrument"),
    (r"^(vehicles|military/vehicles|space)/|vacuum_cleaner|Washing-machine", "machine"),
    (r"^symbols/faces/", "human"),
    (r"^household/", "household"),
)
_LANG_SUFFIX = re.compile(r"_[a-z]{2,3}(_[A-Z]{2})?$")


def labelled_files(roots: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(file id, label or None) for every effect file of Scratch, qaBCs and Tux Paint that is not speech."""
    out: list[tuple[str, str | None]] = []
    if "scratch" in roots:
        root = roots["scratch"]
        for f in sorted((root / SCRATCH_DIR).glob("*/*")):
            folder = f.parent.name
            label = SCRATCH_FOLDERS.get(folder)
            if folder == "Effects":
                label = SCRATCH_EFFECTS.get(f.stem, "household")
            out.append((file_id(root, f, "scratch"), label))
    if "qabcs-data" in roots:
        root = roots["qabcs-data"]
        for f in sorted((root / QABCS_NOISES).glob("*.ogg")):
            out.append((file_id(root, f, "qabcs-data"), QABCS_LABELS.get(f.stem)))
    if "tuxpaint-stamps-default" in roots:
        root = roots["tuxpaint-stamps-default"]
        base = root / TUXPAINT_STAMPS
        for f in sorted(base.rglob("*.ogg")):
            rel = f.relative_to(base).as_posix()
            if (
                "_desc" in f.stem
                or _LANG_SUFFIX.search(f.stem)
                or rel.startswith(("symbols/alphabets", "symbols/math"))
            ):
                continue  # spoken words, not effects
            label = next((lab for pat, lab in TUXPAINT_RULES if re.search(pat, rel)), None)
            out.append((file_id(root, f, "tuxpaint-stamps-default"), label))
    return out


def _crops(path: Path) -> list[tuple[float, float]]:
    """Up to MAX_CROPS non-overlapping CROP_S windows (one window for short files)."""
    total = sf.info(str(path)).duration
    n = max(1, min(MAX_CROPS, int(total // CROP_S)))
    return [(i * CROP_S, CROP_S) for i in range(n)]


def event_items(roots: dict[str, Path]) -> list[SuiteItem]:
    items = []
    for ref, label in labelled_files(roots):
        if label is None:
            continue
        package, rel = ref.split(":", 1)
        for k, (offset, length) in enumerate(_crops(roots[package] / rel)):
            stem = re.sub(r"[^A-Za-z0-9]+", "-", Path(rel).stem)
            items.append(
                SuiteItem(
                    job={"kind": "file", "src": ref, "offset_s": offset, "max_s": length},
                    out=f"audio/events/{package}_{stem}_{stable_seed(ref) % 10**6:06d}_{k}.flac",
                    task="sound_events",
                    label=label,
                    group=f"file:{ref}",
                    origin=ref,
                    source=package,
                )
            )
    return items


def corpus_items(
    roots: dict[str, Path], exclude: set[str], chunk_s: float, n_scenes: int
) -> list[CorpusItem]:
    """Effect files outside `exclude` (suite test groups): strung together, and mixed into scenes."""
    files = [ref for ref, _ in labelled_files(roots) if f"file:{ref}" not in exclude]
    rng = random.Random(stable_seed("env-corpus"))
    rng.shuffle(files)
    items = []
    n = max(3, int(chunk_s / 2.5))
    for i in range(0, len(files), n):
        part = files[i : i + n]
        items.append(
            CorpusItem(
                job={"kind": "concat", "srcs": part, "gap_s": 0.4, "max_each_s": 10.0},
                out=f"audio/environment/effects/{i // n:04d}.flac",
                domain="environment",
                source="+".join(sorted({p.split(":", 1)[0] for p in part})),
                groups=[f"file:{p}" for p in part],
                origins=part,
            )
        )
    for i in range(n_scenes if files else 0):
        srng = random.Random(stable_seed("scene", i))
        part = srng.sample(files, min(len(files), srng.randint(4, 9)))
        items.append(
            CorpusItem(
                job={
                    "kind": "scene",
                    "srcs": part,
                    "length_s": srng.uniform(20, 40),
                    "seed": srng.randrange(2**31),
                },
                out=f"audio/environment/scenes/{i:04d}.flac",
                domain="environment",
                source="+".join(sorted({p.split(":", 1)[0] for p in part})),
                groups=[f"file:{p}" for p in part],
                origins=part,
            )
        )
    return items
