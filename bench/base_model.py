"""Zero-shot accuracy of the base model shipped in the package, on each real set's held-out
fifth (the same fixed fifth as ``real_sites.py``), its output restricted to the set's own
characters (``predict base IMAGES --allowed-chars CHARS``). Reading only: a minute or so.

    python bench/base_model.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, command_line, git_revision, machine, table, update_section
from real_sites import DATASETS, SITES, held_out, site_samples

from captcha_ocr.infer import Reader

# Peers on the same held-out fifth, restricted the same way (see bench/RESULTS.md).
PEERS = {"captcha_images_v2": "ddddocr general model: 93.3 %"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base", help="run folder, .onnx file or base")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    reader = Reader.load(args.model, threads=1)
    rows = []
    for site in SITES:
        if not (DATASETS / site.name).is_dir():
            print(f"{site.name}: not in {DATASETS}, skipped", file=sys.stderr)
            continue
        test = [(path, label) for path, label in site_samples(site) if held_out(Path(path).name)]
        chars = "".join(sorted({c for _, label in test for c in label}))
        unknown = set(chars) - set(reader.spec.charset)
        started = time.perf_counter()
        predictions = reader.read_batch(
            [path for path, _ in test],
            allowed_chars="".join(c for c in chars if c not in unknown),
            skip_errors=True,
        )
        ms = 1000 * (time.perf_counter() - started) / len(test)
        right = sum(p.text == label for p, (_, label) in zip(predictions, test))
        rows.append([site.name, len(test), chars if len(chars) < 20 else f"{len(chars)} chars",
                     f"{right / len(test):.1%}", f"{ms:.2f}", PEERS.get(site.name, "")])  # fmt: skip
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    markdown = "\n".join([
        "## The base model, zero-shot",
        "",
        f"`{command_line()}` at {git_revision()}; {machine()}.",
        "The base model reads each set's held-out fifth as it ships, its output restricted to "
        "the characters of the set's labels (a character it does not know can't be read).",
        "",
        table(["set", "images", "allowed chars", "exact", "ms/image (1 thread)", "peer"], rows),
    ])  # fmt: skip
    print(markdown)
    if not args.no_record:
        update_section("base-model-zero-shot", markdown, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
