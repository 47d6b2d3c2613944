"""tools/mutation: the mutant table matches the tree, the harness's seed choice covers every
tag, and the reach probes leave every mutated file compilable (fast: no mutant is run)."""
import ast
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools" / "mutation"))

import reach  # noqa: E402
import run  # noqa: E402
import verify_harness  # noqa: E402
from mutants import MUTANTS  # noqa: E402


def test_the_table_matches_the_tree():
    run.check_table(MUTANTS)  # raises TableError naming each bad row
    assert len({m["id"] for m in MUTANTS}) == len(MUTANTS) >= 40


def test_a_bad_snippet_is_refused():
    bad = [{**MUTANTS[0], "snippet": MUTANTS[0]["snippet"] + "no such text"}]
    with pytest.raises(run.TableError, match="found 0 times"):
        run.check_table(bad)


def test_the_most_specific_test_files_come_first():
    files = run.test_files("stages/compression/numeric/sparse.py")
    assert files[0] == "tests/compression_numeric/test_sparse.py"
    assert files.index(run.CONTRACT_TESTS) < files.index("tests/stages/compression")
    assert run.harness_prefixes("ir/packing.py") == ("io/",)


def test_tag_cover_covers_every_tag_the_required_number_of_times():
    from pipeline.strategies.choices import tagged_example

    def gen(c):
        for name in ("a", "b", "c"):
            if c.integer(0, 4) == 0:
                c.tag(name)
        return None

    for times in (1, 2):
        chosen = verify_harness.tag_cover(gen, search=60, times=times)
        counts = {}
        for s in chosen:
            for t in tagged_example(gen, s)[1]:
                counts[t] = counts.get(t, 0) + 1
        everywhere = set().union(*(tagged_example(gen, s)[1] for s in range(60)))
        assert set(counts) == everywhere and min(counts.values()) >= times
        assert chosen == verify_harness.tag_cover(gen, search=60, times=times)  # deterministic


def test_probes_keep_every_mutated_file_valid_python(tmp_path):
    files = {m["file"] for m in MUTANTS}
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, tmp_path / f)
    kinds = reach.instrument(tmp_path, MUTANTS)
    assert set(kinds) == {m["id"] for m in MUTANTS}
    for f in files:
        ast.parse((tmp_path / f).read_text())
    probed = sum((tmp_path / f).read_text().count("_wp_reach(") for f in files)
    assert probed == sum(k == "probe" for k in kinds.values())
