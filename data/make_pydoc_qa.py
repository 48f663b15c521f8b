"""Make an instruction dataset from the docstrings of Python's standard library: "which function does this?".

Each record is a chat: the user gives the first sentence of a function's or method's docstring, the
assistant answers with the function's qualified name (`math.sqrt`, `str.upper`, `abs`). Docstrings
are part of the Python documentation (PSF licence). A docstring that names its own function, or that
several functions share word for word, is left out: the answer must not be in the question, and one
question must have one answer.

One function in six (by a hash of its qualified name) is a test question, the others train: no
function, and so no docstring, is in both, so the test measures whether a version names functions it
never saw an answer for (from modules it did see), not whether it memorised the training answers.

The committed `data/pydoc_qa/` is the source of truth: docstrings change between Python releases.

    python data/make_pydoc_qa.py data/pydoc_qa
"""

import hashlib
import inspect
import json
import re
import sys
from collections import Counter
from pathlib import Path

SYSTEM = "Answer with the qualified name of one Python function only, for example os.path.join."
MODULES = [
    "builtins", "str", "list", "dict", "set", "bytes", "int", "float", "math", "cmath", "os.path", "itertools",
    "functools", "string", "re", "time", "operator", "json", "random", "copy", "textwrap", "inspect", "statistics",
    "urllib.parse", "base64", "binascii", "struct", "sys", "unicodedata", "difflib", "secrets", "shutil", "heapq",
    "bisect", "fnmatch", "glob", "zlib", "calendar",
]  # fmt: skip
TEST_SHARE = 6  # one function in six, chosen by a hash of its name, is a test question
TYPES = {"str": str, "list": list, "dict": dict, "set": set, "bytes": bytes, "int": int, "float": float}
MAX_CHARS = 160


def first_sentence(doc: str | None) -> str | None:
    """The docstring's first sentence, signature lines (`sqrt(x)`, `S.upper() -> str`) skipped."""
    if not doc:
        return None
    lines = [line.strip() for line in doc.strip().splitlines()]
    while lines and (re.match(r"^[\w.]+\(.*\)( -> .*)?$", lines[0]) or not lines[0]):
        lines.pop(0)
    paragraph = " ".join(lines[: lines.index("")] if "" in lines else lines)
    sentence = re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0].strip()
    return sentence if 20 <= len(sentence) <= MAX_CHARS and sentence.endswith(".") else None


def functions(module: str) -> list[tuple[str, str]]:
    """(qualified name, first docstring sentence) of the module's (or type's) public functions."""
    import importlib

    owner = TYPES.get(module) or importlib.import_module(module)
    found = []
    for name, value in sorted(vars(owner).items()):
        if name.startswith("_") or not callable(value) or isinstance(value, type):
            continue
        homes = (module, None, f"_{module}", "posixpath" if module == "os.path" else module)
        if module not in TYPES and getattr(value, "__module__", None) not in homes:
            continue  # re-exported from elsewhere
        qualified = name if module == "builtins" else f"{module}.{name}"
        sentence = first_sentence(inspect.getdoc(value))
        if sentence and not re.search(rf"\b{re.escape(name)}\b", sentence, re.IGNORECASE):
            found.append((qualified, sentence))
    return found


def record(name: str, sentence: str, module: str) -> dict:
    question = f"Which Python function does this: {sentence}"
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return {"messages": [*messages, {"role": "assistant", "content": name}], "module": module}


def is_test(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % TEST_SHARE == 0


def main(out: Path) -> None:
    found = [(m, name, sentence) for m in MODULES for name, sentence in functions(m)]
    shared = Counter(sentence for _, _, sentence in found)
    rows = {split: [] for split in ("train", "test")}
    for module, name, sentence in found:
        if shared[sentence] == 1:
            rows["test" if is_test(name) else "train"].append(record(name, sentence, module))
    out.mkdir(parents=True, exist_ok=True)
    for split, kept in rows.items():
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        print(f"{split}: {len(kept)} records from {len({r['module'] for r in kept})} modules")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
