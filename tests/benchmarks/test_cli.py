"""`edgestill bench RECIPE` end to end on real tiny bundles, and its user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgestill.benchmarks.__main__ import main
from edgestill.benchmarks.quality import bundle_quality, eval_records
from edgestill.errors import UserError
from tests.benchmarks.conftest import write_recipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report_dir(tiny_build, tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("cli")
    shutil.copytree(tiny_build, root / "tiny")
    assert main([str(write_recipe(root)), "--build-root", str(root)]) == 0
    return root / "tiny" / "report"


def bundle_names(build):
    return sorted(json.loads(p.read_text())["name"] for p in build.glob("*/manifest.json"))


def test_report_json_lists_every_bundle(report_dir, tiny_build):
    report = json.loads((report_dir / "report.json").read_text())
    assert sorted(m["name"] for m in report["models"]) == bundle_names(tiny_build)
    assert report["models"][0]["role"] == "teacher"
    assert set(report["ratios"]) == {"tiny-fp32", "tiny-int8"}
    assert report["settings"]["quality_examples"] == 2 and report["machine"]["cores_logical"] >= 1
    for m in report["models"]:
        assert m["peak_rss_mb"] > 0 and m["ttft_ms_p50"] > 0 and m["file_bytes"] > 0
        assert 0.0 <= m["quality"]["rouge_l_vs_teacher"] <= 1.0
        assert 0.0 <= m["quality"]["rouge_l_vs_label"] <= 1.0
        assert "top1_agreement_vs_fp32" in m["quality"]  # carried over from the manifest
    assert len(report["examples"]) == 2
    assert set(report["examples"][0]["outputs"]) == set(bundle_names(tiny_build))


def test_report_headline_is_rouge_l_against_the_labels(report_dir, tiny_build):
    """The tiny eval records carry labels (free text): the headline scores every bundle against them."""
    report = json.loads((report_dir / "report.json").read_text())
    headline = report["headline"]
    assert headline["metric"] == "rouge_l_vs_label" and headline["examples"] == 2
    assert headline["answer_tokens"] == 6 and headline["prompt_tokens"] == 16  # max_output_tokens, bench setting
    rows = {r["name"]: r for r in headline["rows"]}
    assert set(rows) == {"teacher, zero-shot", *bundle_names(tiny_build)}  # no distill report: no baselines
    for name in bundle_names(tiny_build):
        model = next(m for m in report["models"] if m["name"] == name)
        assert rows[name]["score"]["value"] == model["quality"]["rouge_l_vs_label"]
        assert rows[name]["request_ms"] > model["ttft_ms_p50"]
    assert rows["tiny-int8"]["retention"]["paired"] is True


def test_report_md_has_a_row_per_model(report_dir, tiny_build):
    table = (report_dir / "report.md").read_text().split("\n## ")[0]
    for name in bundle_names(tiny_build):
        assert sum(line.startswith(f"| {name} |") for line in table.splitlines()) == 1


def test_records_and_plots_written(report_dir, tiny_build):
    records = [json.loads(line) for line in (report_dir / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["machine"]["python"] for r in records)
    pngs = sorted(report_dir.glob("*.png"))
    assert [p.name for p in pngs] == ["headline_latency.png", "quality_speed.png", "size_quality.png",
                                      "speed_memory.png"]
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in pngs)


def test_compare_cli_prints_a_table(report_dir):
    report = str(report_dir / "report.json")
    out = subprocess.run([sys.executable, "-m", "edgestill.benchmarks", "compare", report, report],
                         capture_output=True, text=True, check=True).stdout
    assert "| tiny-int8 | decode_tok_s_p50 |" in out and "+0.0%" in out


def test_quality_of_a_real_bundle_against_known_outputs(tiny_build):
    from edgestill.runtime import Bundle, Generator

    bundle = tiny_build / "bundle-int8"
    records = eval_records(tiny_build / "data", limit=2)
    own = Generator(Bundle.open(bundle), threads=1).generate(records[0]["input"], max_new_tokens=6).strip()
    known = [{**records[0], "output": own, "label": own}, {**records[1], "output": "zebra", "label": "zebra"}]
    quality, rows = bundle_quality(bundle, known, max_new_tokens=6, threads=1)
    assert quality["rouge_l_vs_teacher"] == 0.5 and quality["rouge_l_vs_label"] == 0.5
    assert rows[0]["output"] == own and rows[1]["teacher"] == "zebra"


def test_no_bundles_says_to_run_export(tmp_path):
    (tmp_path / "tiny").mkdir()
    with pytest.raises(UserError, match=r"edgestill export"):
        main([str(write_recipe(tmp_path)), "--build-root", str(tmp_path)])


def test_cli_exit_code_and_one_line_for_user_errors(tmp_path):
    recipe = write_recipe(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edgestill.benchmarks", str(recipe), "--build-root", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no bundles in") and "Traceback" not in proc.stderr


def test_missing_eval_data_names_distill(build_copy, tmp_path):
    (build_copy / "data" / "teacher.jsonl").unlink()
    with pytest.raises(UserError, match="edgestill distill"):
        main([str(write_recipe(tmp_path)), "--build-root", str(build_copy.parent)])


def test_bad_bench_setting_names_the_key(build_copy, tmp_path):
    with pytest.raises(UserError, match="bench.gen_tokens"):
        main([str(write_recipe(tmp_path, gen_tokens=0)), "--build-root", str(build_copy.parent)])


def test_quality_examples_zero_skips_quality(build_copy, tmp_path):
    (build_copy / "data" / "teacher.jsonl").unlink()  # not needed when quality is skipped
    assert main([str(write_recipe(tmp_path, quality_examples=0, repetitions=1)),
                 "--build-root", str(build_copy.parent)]) == 0
    report = json.loads((build_copy / "report" / "report.json").read_text())
    assert report["examples"] == [] and len(report["models"]) == 3
    assert all("rouge_l_vs_teacher" not in m["quality"] for m in report["models"])


def test_distill_figures_are_prefixed(tmp_path):
    from edgestill.benchmarks.__main__ import distill_figures

    (tmp_path / "student").mkdir()
    (tmp_path / "student" / "distill_report.json").write_text(
        json.dumps({"quality": {"rouge_l_vs_teacher": 0.61, "note": "text"}}))
    assert distill_figures(tmp_path) == {"distill_rouge_l_vs_teacher": 0.61}
    assert distill_figures(tmp_path / "nothing") == {}


def test_teacher_is_not_rescored_against_its_own_answers_without_labels(build_copy, tmp_path):
    """Unlabelled eval data: the students get ROUGE-L vs the teacher, the teacher row says "reference"."""
    data = build_copy / "data" / "teacher.jsonl"
    records = [json.loads(line) for line in data.read_text().splitlines()]
    data.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n" for r in records))
    assert main([str(write_recipe(tmp_path, repetitions=1)), "--build-root", str(build_copy.parent)]) == 0
    report = json.loads((build_copy / "report" / "report.json").read_text())
    by_role = {m["role"]: m for m in report["models"]}
    assert "rouge_l_vs_teacher" not in by_role["teacher"]["quality"]
    assert "top1_agreement_vs_fp32" in by_role["teacher"]["quality"]  # export's figures are still carried
    assert all(0.0 <= m["quality"]["rouge_l_vs_teacher"] <= 1.0 for m in report["models"] if m["role"] == "student")
    assert set(report["examples"][0]["outputs"]) == {m["name"] for m in report["models"] if m["role"] == "student"}
    assert "| reference |" in (build_copy / "report" / "report.md").read_text()
