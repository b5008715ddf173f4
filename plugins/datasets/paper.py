"""The reasoning datasets of LLM-Adapters (Hu et al., EMNLP 2023) and its training mixes.

Files come from a local copy in the paper repository's layout (``data_dir`` or
``LLADAPT_DATA_DIR``), else from the user's cache, else from the paper repository's raw files at
a pinned commit, verified by sha256 (see ``lladapt.data.sources``).

The math test sets also have a ``heldout`` split: the v1 paper trained on ``math_data.json``, the
80% training split of the six math test sets, so the test items whose whitespace-normalised,
lower-cased instruction is NOT in ``math_data.json`` are the items that paper could evaluate on
(AddSub 79, MultiArith 109, SingleEq 102, gsm8k 264, AQuA 51, SVAMP 200).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from lladapt import ComponentConfig, DataError, Dataset, Example
from lladapt.data.loading import normalize_text, read_examples
from lladapt.data.sources import RemoteFile, locate

UPSTREAM_REPO = "AGI-Edgerunners/LLM-Adapters"
UPSTREAM_COMMIT = "816657208af4db747803f87ba40a4c71383fed7a"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}"
#: a mirror of the repository's raw files at that commit (the same bytes; pins still apply).
BASE_URL_ENV = "LLADAPT_DATA_URL"
CACHE_KEY = f"llm-adapters/{UPSTREAM_COMMIT[:12]}"

#: sha256 of each upstream file at UPSTREAM_COMMIT. ``None``: not known in advance (the file was
#: too large for the reference copy these pins were computed from); the first download's hash is
#: recorded in the cache and later uses are checked against it.
SHA256: dict[str, str | None] = {
    "dataset/AQuA/test.json": "de677f5f0139340009eb01f17c0db781b4161912cd1f4efa77292f2fcf3478ee",
    "dataset/ARC-Challenge/test.json": "4a89ce368ae01a71d268d9851686738b2a0a1d84271116bab49a1dd2b48ecad7",
    "dataset/ARC-Challenge/train.json": "a9debff28aafed86a08211dc3584a3b6cb38edca8c56bb34cd5002ed54aeebfb",
    "dataset/ARC-Easy/test.json": "3f32a84716ca6d57d38728bf80cc8117aecd17445c2cf29a68b571b810eb82dc",
    "dataset/ARC-Easy/train.json": "6a06cece3dec32f4fb1c1b0fc29dab14be7cf3053b417290dbc6cd845359f5ff",
    "dataset/AddSub/test.json": "62a8662b1ad40879953c4df0e61883a749d03aa3fc5e71f1cdb842b816e139ff",
    "dataset/MultiArith/test.json": "a40f426807c8a563802c2a5b66bda3bcd1eba9c099038fd1199f0dd57de5fd28",
    "dataset/SVAMP/test.json": "ffed015784f738f317c5603177861d044c4fc94e09211d78b25e96d46c656e2c",
    "dataset/SingleEq/test.json": "712b15edb851c97aab42a5de106d94008f94d917366c92537ed5400a8aacb207",
    "dataset/boolq/test.json": "89df2397cbca81dc31adcc6f7f5b635821aa0565aafde46725b2b4bd39b4dfa9",
    "dataset/boolq/train.json": "5ccbaceebaddc69765e1c4a363632196b81851d303696672165ab59ec4e48c83",
    "dataset/gsm8k/test.json": "2cc616a1e0b23ea1df29370476365cde71c4e0aa823fb06cc194c5a8a9381abe",
    "dataset/mathqa/test.json": "58715cb7aaccc7f3f2994586073800a57a3e44f77d22e62bee7fd7ff8315172c",
    "dataset/mawps/test.json": "c1a708979cbf2b3df9ac4020baacf3e8e73fcf089e1de7dd1b305b810bfaa15f",
    "dataset/openbookqa/test.json": "8479930f7b8a26052c78250280b5465a4016ca7fc806af440d0f37e243f3099e",
    "dataset/openbookqa/train.json": "a1e094eeea01f70c0baa880f37497b26700ae99b243927b9c529984de9b1fe90",
    "dataset/piqa/test.json": "3860d11b9b42e590b6b4bbc1643214d373ed0b0d4ac62fcc7bdceb8e044ad141",
    "dataset/social_i_qa/test.json": "71543f41127451945379d106ffedaef502f1c8770dff6d2f543aca85e3080b1d",
    "dataset/winogrande/test.json": "6946f5209e7114c65c6d04f8f644c5a061af20d730b1cfe158fff3dc44076fb9",
    "ft-training_set/math_data.json": "1d06633b4db748b7cfa38f2891f8d7b17b3636717b3188dd382045b94cf999a7",
    # Not pinned: the reference copy of hellaswag/test.json is a 934-record prefix of the
    # upstream file, and the files below were too large to copy.
    "dataset/hellaswag/test.json": None,
    "dataset/hellaswag/train.json": None,
    "dataset/piqa/train.json": None,
    "dataset/social_i_qa/train.json": None,
    "dataset/winogrande/train.json": None,
    "ft-training_set/math_10k.json": None,
    "ft-training_set/math_7k.json": None,
    "ft-training_set/math_14k.json": None,
    "ft-training_set/math_50k.json": None,
    "ft-training_set/commonsense_15k.json": None,
    "ft-training_set/commonsense_170k.json": None,
}


def remote_file(path: str) -> RemoteFile:
    """The upstream file at ``path``: where it may sit locally (the paper repository's layout,
    with or without its top folder) and where to download it from."""
    top, _, rest = path.partition("/")
    local = (rest, path) if top == "dataset" else (path, rest)
    base = os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return RemoteFile(
        path=path,
        url=f"{base.rstrip('/')}/{path}",
        sha256=SHA256[path],
        cache_key=CACHE_KEY,
        local_paths=local,
    )


# --------------------------------------------------------------------------- dataset classes


class PaperConfig(ComponentConfig):
    #: a local copy of the paper repository's data (``<Folder>/test.json`` or
    #: ``dataset/<Folder>/test.json``, ``ft-training_set/<mix>.json``); default: the config's
    #: ``data.data_dir``, then ``LLADAPT_DATA_DIR``, then the cache / a download.
    data_dir: Path | None = None


class PaperDataset(Dataset):
    """Base of the LLM-Adapters datasets: one upstream JSON file per split."""

    #: split -> upstream path.
    files: ClassVar[Mapping[str, str]] = {}

    Config = PaperConfig

    def file(self, split: str) -> RemoteFile:
        return remote_file(self.files[split])

    def path(self, split: str) -> Path:
        """The local path of a split's file (downloading it if needed)."""
        return locate(self.file(split), self.config.data_dir)

    def load(self, split: str) -> list[Example]:
        if split not in self.files:
            raise DataError(
                f"dataset '{self.name}' has no split '{split}'; its splits: {', '.join(self.splits)}"
            )
        return read_examples(self.path(split), source=f"{self.name}/{split}")


class MathTestSet(PaperDataset):
    """Base of the six math test sets of the v1 paper: ``test`` and ``heldout``."""

    splits = ("test", "heldout")

    def load(self, split: str) -> list[Example]:
        if split != "heldout":
            return super().load(split)
        training = MathData(MathData.Config(data_dir=self.config.data_dir)).load("train")
        seen = {normalize_text(ex.instruction) for ex in training}
        return [ex for ex in super().load("test") if normalize_text(ex.instruction) not in seen]


def _dataset(
    name: str,
    doc: str,
    files: Mapping[str, str],
    *,
    base: type[PaperDataset] = PaperDataset,
    task: str = "math",
    parser: str = "number",
    choices: tuple[str, ...] = (),
    aliases: tuple[str, ...] = (),
) -> type[PaperDataset]:
    """A dataset class: math sets generate 256 new tokens, commonsense sets 32 (the paper's)."""
    cls_name = "".join(part.capitalize() for part in name.split("_"))
    splits = base.splits if base is not PaperDataset else tuple(files)
    attrs: dict[str, Any] = {
        "__doc__": doc,
        "__module__": __name__,
        "__qualname__": cls_name,
        "name": name,
        "aliases": aliases,
        "splits": splits,
        "task": task,
        "parser": parser,
        "parser_options": {"choices": list(choices)} if choices else {},
        "max_new_tokens": 256 if task == "math" else 32,
        "files": dict(files),
    }
    return type(cls_name, (base,), attrs)


def _folder_aliases(name: str, folder: str) -> tuple[str, ...]:
    return (folder,) if folder != name else ()


def _math(name: str, folder: str, doc: str, *, parser: str = "number", heldout: bool = True):
    return _dataset(
        name, doc, {"test": f"dataset/{folder}/test.json"},
        base=MathTestSet if heldout else PaperDataset, parser=parser,
        aliases=_folder_aliases(name, folder),
    )


def _commonsense(name: str, folder: str, doc: str, choices: tuple[str, ...], aliases=()):
    return _dataset(
        name, doc,
        {split: f"dataset/{folder}/{split}.json" for split in ("train", "test")},
        task="commonsense", parser="choice", choices=choices,
        aliases=_folder_aliases(name, folder) + tuple(aliases),
    )


def _mix(name: str, doc: str, task: str = "math"):
    return _dataset(
        name, doc, {"train": f"ft-training_set/{name}.json"},
        task=task, parser="number" if task == "math" else "choice",
    )


_ANSWERS = tuple(f"answer{i}" for i in range(1, 6))

DATASETS: tuple[type[PaperDataset], ...] = (
    # the six math test sets of the v1 paper (answer: a number; AQuA: a letter A-E)
    _math("addsub", "AddSub", "AddSub: 395 addition/subtraction word problems."),
    _math("multiarith", "MultiArith", "MultiArith: 600 multi-step arithmetic word problems."),
    _math("singleeq", "SingleEq", "SingleEq: 508 single-equation word problems."),
    _math("gsm8k", "gsm8k", "GSM8K: 1,319 grade-school math word problems."),
    _math("aqua", "AQuA", "AQuA: 254 algebra questions with five options (answer: a letter A-E).",
          parser="letter"),
    _math("svamp", "SVAMP", "SVAMP: 1,000 arithmetic word problems with varied structure."),
    # the EMNLP version's extra math test sets
    _math("mawps", "mawps", "MAWPS: 238 arithmetic word problems.", heldout=False),
    _math("mathqa", "mathqa", "MathQA: 2,985 multiple-choice math questions (answer: a letter A-E).",
          parser="letter", heldout=False),
    # the eight commonsense sets (answer: one of the words the instruction lists)
    _commonsense("boolq", "boolq", "BoolQ: yes/no questions about a passage (answer: true/false).",
                 ("true", "false")),
    _commonsense("piqa", "piqa", "PIQA: physical commonsense, two solutions (answer: solution1/2).",
                 ("solution1", "solution2")),
    _commonsense("siqa", "social_i_qa", "Social IQa: social commonsense (answer: answer1..answer3).",
                 _ANSWERS),
    _commonsense("hellaswag", "hellaswag", "HellaSwag: pick a sentence's ending (answer: ending1..4).",
                 ("ending1", "ending2", "ending3", "ending4")),
    _commonsense("winogrande", "winogrande", "WinoGrande: fill in the blank (answer: option1/2).",
                 ("option1", "option2")),
    _commonsense("arc_easy", "ARC-Easy", "ARC-Easy: grade-school science (answer: answer1..answer5).",
                 _ANSWERS),
    _commonsense("arc_challenge", "ARC-Challenge",
                 "ARC-Challenge: harder grade-school science (answer: answer1..answer5).", _ANSWERS),
    _commonsense("openbookqa", "openbookqa", "OpenBookQA: open-book science (answer: answer1..answer4).",
                 _ANSWERS, aliases=("obqa",)),
    # training mixes (ft-training_set/)
    _mix("math_data", "The v1 paper's training set: 3,260 items, the 80% training split of the six "
         "math test sets with zero-shot-CoT rationales."),
    _mix("math_10k", "Math10K: the EMNLP version's math training mix (it contains AddSub, "
         "MultiArith and SingleEq test items: LLM-Adapters issue #43)."),
    _mix("math_7k", "Math7K: math_10k without the MAWPS items."),
    _mix("math_14k", "Math14K: math_7k with ChatGPT and GPT-4 rationales combined."),
    _mix("math_50k", "Math50K: the paper repository's larger math training mix."),
    _mix("commonsense_15k", "Commonsense15K: a 15k sample of commonsense_170k.", "commonsense"),
    _mix("commonsense_170k", "Commonsense170K: the eight commonsense training sets, merged.",
         "commonsense"),
)
MathData: type[PaperDataset] = next(c for c in DATASETS if c.name == "math_data")

#: the names of the 14 evaluation sets of the EMNLP version's tables (6 math + 8 commonsense).
PAPER_EVAL_SETS: tuple[str, ...] = (
    "gsm8k", "svamp", "multiarith", "addsub", "aqua", "singleeq",
    "boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa",
)
