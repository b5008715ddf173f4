"""`lladapt sweep`: grid expansion, validation of every run up front, trainable-parameter budgets,
the state of run folders, and two-run sweeps on the local executor and on a local Ray instance,
combined by `lladapt report`."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import textwrap

import pytest
import yaml
from click.testing import CliRunner

from lladapt.cli import _load_core_commands, cli
from lladapt.common.errors import ConfigError, LladaptError
from lladapt.sweep import load_sweep, plan, run_sweep
from lladapt.sweep.budget import nearest_size
from lladapt.sweep.spec import merge
from lladapt.sweep.state import run_status


def _write(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _base(model):
    return {
        "model": str(model),
        "adapter": {"name": "lora", "r": 4, "alpha": 8},
        "data": {"train": [{"name": "arith", "limit": 8}], "cutoff_len": 48},
        "train": {"max_steps": 2, "batch_size": 4, "micro_batch_size": 4, "learning_rate": 0.02,
                  "warmup_steps": 0, "logging_steps": 1, "save_steps": 1, "progress": "none"},
        "eval": {"datasets": [{"name": "arith", "split": "test"}], "limit": 2, "max_new_tokens": 3},
    }


# --------------------------------------------------------------------------- expansion


def test_merge_nests_dotted_keys_replaces_lists_and_null_removes():
    base = {"adapter": {"name": "lora", "r": 8}, "data": {"train": [{"name": "a"}], "cutoff_len": 64}}
    out = merge(base, {"adapter.r": 16, "data": {"train": [{"name": "b"}]}, "placement": None})
    assert out == {"adapter": {"name": "lora", "r": 16}, "data": {"train": [{"name": "b"}], "cutoff_len": 64},
                   "placement": None}
    assert base["adapter"]["r"] == 8  # not changed
    assert merge(base, {"adapter": None})["adapter"] is None
    # another component replaces the section: LoRA's r does not leak into a series adapter
    assert merge(base, {"adapter": {"name": "series", "bottleneck_size": 8}})["adapter"] == {
        "name": "series", "bottleneck_size": 8}
    assert merge(base, {"adapter": {"alpha": 16}})["adapter"] == {"name": "lora", "r": 8, "alpha": 16}


def test_grid_expands_to_the_product_with_names_and_folders(tmp_path):
    sweep = _write(tmp_path / "s.yaml", {
        "output_dir": str(tmp_path / "runs"),
        "base": {"model": "llama-7b", "adapter": {"name": "lora"}},
        "grid": {
            "adapter": {"lora": {"adapter": {"name": "lora", "r": 8}},
                        "series": {"adapter": {"name": "series", "bottleneck_size": 64}, "placement": "mlp",
                                   "resources": {"num_gpus": 1}}},
            "train.seed": [1, 2],
            "train.epochs": [3],  # one value: not in the names
        },
        "resources": {"num_cpus": 2},
    })
    loaded = load_sweep(sweep)
    assert [r.name for r in loaded.runs] == ["lora_seed-1", "lora_seed-2", "series_seed-1", "series_seed-2"]
    series2 = loaded.runs[3]
    assert series2.output_dir == tmp_path / "runs" / "series_seed-2"
    assert series2.config.adapter.name == "series" and series2.config.adapter.options.bottleneck_size == 64
    assert series2.config.placement.name == "mlp"
    assert (series2.config.train.seed, series2.config.train.epochs) == (2, 3)
    assert loaded.runs[0].config.adapter.options.r == 8 and loaded.runs[0].config.placement is None
    # a variant's resources are what its runs ask of the executor, not config
    assert [(r.resources.num_cpus, r.resources.num_gpus) for r in loaded.runs] == [(2, 0), (2, 0), (2, 1), (2, 1)]
    assert "resources" not in series2.data
    data = yaml.safe_load(sweep.read_text())
    data["grid"]["adapter"]["series"]["resources"] = {"num_gpu": 1}
    with pytest.raises(ConfigError, match=r"series_seed-1.resources.num_gpu: unknown key"):
        load_sweep(_write(sweep, data))


def test_every_invalid_run_is_named_before_anything_runs(tmp_path):
    sweep = _write(tmp_path / "s.yaml", {
        "output_dir": str(tmp_path / "runs"),
        "base": {"model": "llama-7b"},
        "grid": {"adapter": {"good": {"adapter": {"name": "lora"}},
                             "bad": {"adapter": {"name": "lora", "r": -1}},
                             "typo": {"adapter": {"name": "lorra"}}}},
    })
    with pytest.raises(ConfigError) as info:
        load_sweep(sweep)
    text = str(info.value)
    assert f"'{sweep}'" in text and "bad.adapter.r" in text and "typo.adapter.name" in text
    assert "good" not in text.replace("greater", "")
    assert not (tmp_path / "runs").exists()


def test_a_sweep_file_with_an_unknown_key_is_refused(tmp_path):
    sweep = _write(tmp_path / "s.yaml", {"output_dir": "runs", "grids": {}})
    with pytest.raises(ConfigError, match="grids"):
        load_sweep(sweep)


# --------------------------------------------------------------------------- budgets


def test_nearest_size_finds_the_closest_count():
    calls = []

    def count(size):
        calls.append(size)
        return 1000 * size

    assert nearest_size(count, 12_400, 4096) == 12
    assert nearest_size(count, 12_600, 4096) == 13
    assert nearest_size(count, 12_500, 4096) == 12  # a tie: the smaller
    assert nearest_size(count, 10, 4096) == 1
    assert nearest_size(count, 10**9, 64) == 64
    calls.clear()
    nearest_size(count, 700_000, 4096)
    assert len(set(calls)) <= 22  # doubling then bisection, not a scan


def test_budget_sizes_each_adapter_near_the_target(tmp_path):
    # llama-7b (meta device): LoRA on q, v = 2 * 32 layers * r * (4096 + 4096) = 524,288 r;
    # series after the MLP = 32 * (2 * 4096 * b) = 262,144 b; prefix = 32 * 2 * 4096 * n = 262,144 n.
    sweep = _write(tmp_path / "s.yaml", {
        "output_dir": str(tmp_path / "runs"),
        "base": {"model": "llama-7b"},
        "grid": {"adapter": {"lora": {"adapter": {"name": "lora"}},
                             "series": {"adapter": {"name": "series"}, "placement": "mlp"},
                             "prefix": {"adapter": {"name": "prefix"}},
                             "none": {"adapter": None}}},
        "budget": {"trainable": 4_200_000},
    })
    runs = {r.name: r for r in load_sweep(sweep).runs}
    assert runs["lora"].budget == {"option": "adapter.r", "value": 8, "trainable": 4_194_304, "target": 4_200_000}
    assert runs["series"].budget == {"option": "adapter.bottleneck_size", "value": 16,
                                     "trainable": 4_194_304, "target": 4_200_000}
    assert runs["prefix"].budget["option"] == "adapter.num_virtual_tokens"
    assert runs["prefix"].budget["value"] == 16 and runs["prefix"].budget["trainable"] == 4_194_304
    assert runs["lora"].config.adapter.options.r == 8
    assert runs["none"].budget is None


def test_budget_refuses_an_adapter_without_a_size(tmp_path, monkeypatch):
    from lladapt.plugins.adapters.lora import LoraAdapter

    monkeypatch.setattr(LoraAdapter, "size_option", None)
    sweep = _write(tmp_path / "s.yaml", {
        "output_dir": "runs", "base": {"model": "llama-7b", "adapter": {"name": "lora"}},
        "budget": {"trainable": 1000},
    })
    with pytest.raises(ConfigError, match="run.adapter: adapter 'lora' declares no size option"):
        load_sweep(sweep)
    _write(tmp_path / "s.yaml", {
        "output_dir": "runs", "base": {"model": "llama-7b", "adapter": {"name": "lora"}},
        "budget": {"trainable": 600_000, "options": {"lora": "r"}},
    })
    assert load_sweep(tmp_path / "s.yaml").runs[0].budget["value"] == 1


# --------------------------------------------------------------------------- folders


def test_run_status_of_each_kind_of_folder(tmp_path):
    planned = {"a": 1, "train": {"seed": 1}}
    folder = tmp_path / "r"
    assert run_status(folder, planned) == "pending"
    folder.mkdir()
    assert run_status(folder, planned) == "pending"
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(LladaptError, match="holds files but no config.json: it is not a lladapt run"):
        run_status(folder, planned)
    (folder / "config.json").write_text(json.dumps(planned))
    assert run_status(folder, planned) == "partial"
    (folder / "results.json").write_text("{}")
    assert run_status(folder, planned) == "finished"
    with pytest.raises(LladaptError, match=r"train.seed: 1 there, 2 in the sweep"):
        run_status(folder, {"a": 1, "train": {"seed": 2}})


# --------------------------------------------------------------------------- running
# One two-run sweep (LoRA and series on stories260k, 2 steps each, 2 arith items) on the local
# executor, shared by the tests below; each run is a `python -m lladapt run` subprocess.


def _two_run_sweep(folder, model, name, resources=None):
    data = {
        "name": name, "output_dir": str(folder / name),
        "base": _base(model),
        "grid": {"adapter": {"lora": {"adapter": {"name": "lora", "r": 4, "alpha": 8}},
                             "series": {"adapter": {"name": "series", "bottleneck_size": 8},
                                        "placement": "mlp"}}},
    }
    if resources:
        data["resources"] = resources
    return _write(folder / f"{name}.yaml", data)


def _finished(folder, adapter):
    results = json.loads((folder / "results.json").read_text())
    assert results["adapter"]["name"] == adapter and results["train"]["steps"] == 2
    assert results["eval"][0]["total"] == 2
    return results


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    from assets import shared_asset

    model = shared_asset("models", "stories260k", "config.json").parent
    folder = tmp_path_factory.mktemp("sweeps")
    path = _two_run_sweep(folder, model, "local")
    _load_core_commands()
    result = CliRunner().invoke(cli, ["sweep", str(path)])
    assert result.exit_code == 0, result.output
    return path


@pytest.mark.slow
def test_local_sweep_runs_every_run_and_reports(local_sweep):
    out = local_sweep.parent / "local"
    _finished(out / "lora", "lora")
    _finished(out / "series", "series")
    md = (out / "report" / "report.md").read_text()
    assert "| lora | stories260k | lora |" in md and "| series | stories260k | series |" in md
    assert "| lora vs series | " in md  # the two runs compared item by item
    pairs = json.loads((out / "report" / "paired.json").read_text())["pairs"]
    assert [(p["run_a"], p["run_b"]) for p in pairs] == [(str(out / "lora"), str(out / "series"))]
    record = json.loads((out / "sweep.json").read_text())
    assert [(r["name"], r["status_before"]) for r in record["runs"]] == [("lora", "pending"), ("series", "pending")]
    assert all(r["outcome"]["returncode"] == 0 for r in record["runs"])
    for name in ("lora", "series"):  # each run's record beside the report, identical to the run's own
        for record in ("config.json", "results.json", "metrics.jsonl"):
            assert (out / "report" / "runs" / name / record).read_bytes() == (out / name / record).read_bytes()
    config = json.loads((out / "configs" / "series.json").read_text())
    assert config["adapter"] == {"name": "series", "bottleneck_size": 8} and config["output_dir"] == str(out / "series")


@pytest.mark.slow
def test_a_rerun_skips_finished_runs_and_resumes_a_cut_off_one(local_sweep):
    out = local_sweep.parent / "local"
    series = out / "series"
    lora = json.loads((out / "lora" / "results.json").read_text())
    (series / "results.json").unlink()  # cut off after training, during evaluation
    metrics = (series / "metrics.jsonl").read_text()
    messages = []
    again = run_sweep(load_sweep(local_sweep), echo=messages.append)
    assert "lora: finished, skipped" in messages
    assert [o.name for o in again.outcomes] == ["series"] and again.outcomes[0].ok
    log = (out / "logs" / "series.log").read_text()
    assert "--resume" in log and "training finished before the interruption" in log
    assert (series / "metrics.jsonl").read_text() == metrics  # not trained again
    assert _finished(series, "series")["eval"][0]["resumed"] == 2  # both predictions read back
    assert json.loads((out / "lora" / "results.json").read_text()) == lora

    # a finished run whose config the sweep no longer matches is refused, naming the key
    data = yaml.safe_load(local_sweep.read_text())
    data["base"]["train"]["learning_rate"] = 0.01
    changed = _write(local_sweep.parent / "changed.yaml", data)
    with pytest.raises(LladaptError, match=r"train.learning_rate: 0.02 there, 0.01 in the sweep"):
        plan(load_sweep(changed))


@pytest.mark.slow
def test_a_ray_sweep_and_the_local_one_combine_in_one_report(local_sweep):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    folder = local_sweep.parent
    model = yaml.safe_load(local_sweep.read_text())["base"]["model"]
    ray_sweep = _two_run_sweep(folder, model, "onray", resources={"num_cpus": 1})
    runner = CliRunner()
    dry = runner.invoke(cli, ["sweep", str(ray_sweep), "--dry-run", "--json"])
    assert [(r["run"], r["status"]) for r in json.loads(dry.output)] == [("lora", "pending"), ("series", "pending")]
    result = runner.invoke(cli, ["sweep", str(ray_sweep), "--executor", "ray"])
    assert result.exit_code == 0, result.output
    assert "lora: submitted to Ray" in result.output and "series: done" in result.output
    ray_lora = _finished(folder / "onray" / "lora", "lora")
    _finished(folder / "onray" / "series", "series")
    only_report = runner.invoke(cli, ["sweep", str(ray_sweep), "--report-only"])
    assert only_report.exit_code == 0 and "submitted" not in only_report.output
    assert only_report.stdout.split()[0] == str(folder / "onray" / "report" / "report.md")
    runs = [folder / "local" / "lora", folder / "local" / "series", folder / "onray" / "lora", folder / "onray" / "series"]
    report = runner.invoke(cli, ["report", *map(str, runs), "--out", str(folder / "all"), "--no-charts"])
    assert report.exit_code == 0, report.output
    rows = list(csv.DictReader(io.StringIO((folder / "all" / "report.csv").read_text())))
    assert [(r["run"], r["adapter"]) for r in rows] == [  # same-named runs told apart by their sweep
        ("local/lora", "lora"), ("local/series", "series"), ("onray/lora", "lora"), ("onray/series", "series")]
    # same config and seed on both executors: the same training loss and the same answers
    local_lora = json.loads((folder / "local" / "lora" / "results.json").read_text())
    assert ray_lora["train"]["final_loss"] == pytest.approx(local_lora["train"]["final_loss"], rel=1e-5)
    assert rows[0]["average"] == rows[2]["average"] and rows[1]["average"] == rows[3]["average"]


def test_a_failed_run_fails_the_sweep_and_names_its_log(tmp_path, stories260k):
    model = tmp_path / "model"
    shutil.copytree(stories260k, model)
    data = yaml.safe_load(_two_run_sweep(tmp_path, model, "broken").read_text())
    data["grid"] = {"adapter": {"lora": {}}}
    sweep = load_sweep(_write(tmp_path / "broken.yaml", data))  # valid: the model is there
    shutil.rmtree(model)  # gone before the run starts
    result = run_sweep(sweep, echo=lambda _: None)
    assert [o.ok for o in result.outcomes] == [False]
    log = (tmp_path / "broken" / "logs" / "lora.log").read_text()
    assert "Error: " in log and str(model) in log
    assert os.path.basename(result.failed[0].log_path) == "lora.log"
    assert result.report == []


def test_the_ray_executor_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from lladapt.sweep.executors import Job, run_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when it is not installed
    job = Job("a", str(tmp_path / "a.json"), str(tmp_path / "a.log"), resume=False, cwd=str(tmp_path))
    with pytest.raises(LladaptError, match=r"--executor ray needs Ray: pip install 'lladapt\[ray\]'"):
        run_ray([job], echo=lambda _: None)
    assert not (tmp_path / "a.log").exists()


def test_the_documented_example_and_the_paper_sweep_load(tmp_path):
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    page = (docs / "sweeps.md").read_text()
    example = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    # on the llama-7b preset (meta device, no download): budgets are exact multiples there
    loaded = load_sweep(_write(tmp_path / "example.yaml", yaml.safe_load(example)), ["model=llama-7b"])
    assert [r.name for r in loaded.runs] == ["untrained_seed-1", "untrained_seed-2", "lora_seed-1", "lora_seed-2",
                                             "series_seed-1", "series_seed-2"]
    budgets = {r.name: r.budget for r in loaded.runs}
    assert budgets["untrained_seed-1"] is None
    assert (budgets["lora_seed-1"]["value"], budgets["lora_seed-1"]["trainable"]) == (4, 2_097_152)
    assert (budgets["series_seed-2"]["value"], budgets["series_seed-2"]["trainable"]) == (8, 2_097_152)

    paper = load_sweep(docs / "examples" / "paper-v1-smollm2.yaml", ["model=llama-7b"])
    assert [r.name for r in paper.runs] == ["lora", "series", "parallel", "prefix", "untrained"]
    runs = {r.name: r.config for r in paper.runs}
    assert runs["untrained"].adapter is None and runs["untrained"].data.train == []
    assert runs["prefix"].train.learning_rate == 3e-2 and runs["lora"].train.learning_rate == 3e-4
    assert [d.name for d in runs["lora"].eval.datasets] == ["addsub", "multiarith", "singleeq", "gsm8k", "aqua", "svamp"]
    assert runs["lora"].eval.split == "heldout" and runs["lora"].data.train[0].name == "math_data"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_run_does_not_outlive_the_process_that_started_it(tmp_path):
    import signal
    import subprocess
    import time

    # a stand-in for the sweep (or Ray worker): starts a child through lladapt.cli.sweep_child, then
    # is SIGKILLed; the child gets SIGTERM from the kernel and stops.
    starter = textwrap.dedent(f"""
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import sys; from lladapt.cli.sweep_child import tie_to_parent; "
                                  "import os, time; assert tie_to_parent(os.getppid()); "
                                  "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)",
                                  {str(tmp_path / "pid")!r}])
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", starter])
    pid_file = tmp_path / "pid"
    for _ in range(200):
        if pid_file.is_file() and pid_file.read_text():
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its starter")


def test_a_child_whose_starter_is_gone_does_not_start(capsys):
    from lladapt.cli import sweep_child as child

    with pytest.raises(SystemExit) as info:
        child.main([str(os.getppid() + 10**6), "--version"])
    assert info.value.code == child.ORPHANED
    assert "is gone; not starting" in capsys.readouterr().err
