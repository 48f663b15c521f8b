"""Make data/harness/module_docs.jsonl: the docstrings of Python standard-library modules, one record each.

Prose none of the shipped training sets contains (they hold the language reference's topics and
single sentences of function docstrings), for the lm-evaluation-harness task
data/harness/module_docs.yaml: the base's and each version's perplexity on it (lm-eval's
loglikelihood_rolling, like its wikitext task). A version whose perplexity there rises far above
the base's has lost some of what the base knew. Docstrings are part of the Python documentation
(PSF licence). Modules whose docstring is shorter than MIN_CHARS are left out.

    python data/make_module_docs.py data/harness/module_docs.jsonl
"""

import importlib
import json
import sys
from pathlib import Path

MODULES = [
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "cmd", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "doctest", "email", "enum", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext",
    "glob", "heapq", "hmac", "http", "imaplib", "inspect", "ipaddress", "json", "locale", "logging",
    "mailbox", "mimetypes", "numbers", "optparse", "os", "pathlib", "pdb", "pickle", "pprint", "queue",
    "random", "re", "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "smtplib", "socket",
    "sqlite3", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "traceback", "types", "typing", "unittest", "uuid", "warnings",
    "weakref", "zipfile",
]  # fmt: skip
MIN_CHARS = 400


def main(out: Path) -> None:
    rows = []
    for name in MODULES:
        doc = (importlib.import_module(name).__doc__ or "").strip()
        if len(doc) >= MIN_CHARS:
            rows.append({"module": name, "text": doc})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {len(rows)} module docstrings, {sum(len(r['text']) for r in rows):,} characters")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
