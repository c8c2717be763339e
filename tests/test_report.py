"""sweeps.report on an MLflow store written with the sweep's schema (parent run + nested trials).

The store is built here with MlflowClient so the expected table / points / cells are known exactly;
``test_report_from_real_sweep`` (in test_report_sweep.py) builds one from a real small sweep.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from sweeps import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS, MODULES = 6, ("query", "key", "value")
NAMES = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(LAYERS) for m in MODULES]


def assert_png(path: Path) -> np.ndarray:
    """A real, decodable, non-empty PNG."""
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img.std() > 0  # not a blank canvas
    return img


def _child(client, exp, parent, name, tags, params, metrics_by_step, final, artifact=None, tmp=None):
    run = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent, **tags})
    rid = run.info.run_id
    for k, v in params.items():
        client.log_param(rid, k, v)
    for step, ms in metrics_by_step:
        for k, v in ms.items():
            client.log_metric(rid, k, v, step=step)
    for k, v in final.items():  # as the sweep's callback: once, at the end, as final_<name>
        client.log_metric(rid, f"final_{k}", v, step=0)
    if artifact is not None:
        p = Path(tmp) / rid / "selection.json"
        p.parent.mkdir(parents=True)
        p.write_text(json.dumps(artifact))
        client.log_artifact(rid, str(p))
    client.set_terminated(rid, "FAILED" if tags["status"] == "failed" else "FINISHED")
    return rid


def _curve(final_main: float, epochs: int, steps_per_epoch: int = 10, metric: str = "accuracy"):
    out = []
    for e in range(1, epochs + 1):
        step = e * steps_per_epoch
        v = final_main - 0.05 * (epochs - e)
        # trainable_params by step is the pre-selection count here: the report must use final_*.
        ms = {"train_loss": 1.0 / e, "epoch": float(e), "eval_main": v, f"eval_{metric}": v, "trainable_params": 1e9}
        out.append((step, ms))
    return out


def make_store(tmp: Path, sweep_name: str = "unit-sweep") -> dict:
    """A sweep store: SST-2 and MRPC × {lora, weightlora, random_select, weightlora_plus}, 3 trials
    each (one ASHA-stopped), one failed trial, and 3 seed re-runs for (weightlora, sst2)."""
    uri = f"sqlite:///{tmp}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("wlora-glue", artifact_location=(tmp / "artifacts").as_uri())
    parent = client.create_run(
        exp,
        run_name=sweep_name,
        tags={
            "wlora.role": "sweep",
            "git_commit": "abc123",
            "model": "m/all-MiniLM-L6-v2",
            "wlora.sweep_name": sweep_name,
        },
    ).info.run_id
    client.log_param(parent, "num_epochs", 3)
    expected = {"best": {}, "points": {"sst2": 0, "mrpc": 0}, "names": []}
    params_by_method = {"lora": 86000, "weightlora": 21000, "random_select": 21000, "weightlora_plus": 86000}
    rng = np.random.default_rng(0)
    for task in ("sst2", "mrpc"):
        for mi, method in enumerate(params_by_method):
            for trial in range(3):
                stopped = trial == 2
                main = 0.80 + 0.02 * mi + 0.01 * trial - (0.1 if stopped else 0.0)
                epochs = 1 if stopped else 3
                name = f"{method}-{task}-{trial}"
                sel = None
                if method in ("weightlora", "weightlora_plus"):
                    scores = {n: float(abs(rng.normal())) for n in NAMES}
                    top = sorted(scores, key=scores.get)[-4:]
                    sel = {"method": method, "selection_scores": scores, "selected_adapters": top}
                    sel["ranks"] = {n: (8 if method == "weightlora" else 36) for n in top}
                elif method == "random_select":
                    sel = {"method": method, "n_adapters": 18, "selected_adapters": NAMES[:4]}
                    sel["ranks"] = dict.fromkeys(NAMES[:4], 8)
                curve = _curve(main, epochs, metric="accuracy")
                if task == "mrpc":
                    curve = [(s, {**m, "eval_f1": m["eval_main"] + 0.05}) for s, m in curve]
                _child(
                    client,
                    exp,
                    parent,
                    name,
                    {
                        "wlora.role": "trial",
                        "method": method,
                        "task": task,
                        "status": "asha_stopped" if stopped else "completed",
                        "seed": "0",
                        "trial_id": name,
                    },
                    {"lr": "0.001", "r": "8", "k": "4" if method != "lora" else ""},
                    curve,
                    {
                        "trainable_params": params_by_method[method] + trial,
                        "trainable_pct": params_by_method[method] / 22.7e6 * 100,
                        # besides a task head of 1,000 parameters: the table's # Params
                        "method_params": params_by_method[method] + trial - 1000,
                        "method_pct": (params_by_method[method] - 1000) / 22.7e6 * 100,
                        "active_adapters": 18 if method == "lora" else 4,
                    },
                    artifact=sel,
                    tmp=tmp,
                )
                expected["points"][task] += 1
                expected["names"].append(name)
            expected["best"][(method, task)] = 0.80 + 0.02 * mi + 0.01
    _child(
        client, exp, parent, "lora-sst2-failed",
        {"wlora.role": "trial", "method": "lora", "task": "sst2", "status": "failed", "seed": "0"},
        {"lr": "10"}, [], {},
    )  # fmt: skip
    seed_vals = [0.84, 0.86, 0.88]
    for s, v in enumerate(seed_vals):
        _child(
            client, exp, parent, f"seed-weightlora-sst2-{s}",
            {"wlora.role": "seed_run", "method": "weightlora", "task": "sst2", "seed": str(s), "status": "completed"},
            {"lr": "0.001", "r": "8", "k": "4"}, _curve(v, 3),
            {"trainable_params": 21000, "trainable_pct": 0.0925, "method_params": 20000,
             "method_pct": 20000 / 22.7e6 * 100, "active_adapters": 4},
        )  # fmt: skip
    client.set_terminated(parent)
    return {"uri": uri, "parent": parent, "client": client, "exp": exp, "expected": expected, "seed_vals": seed_vals}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("store")
    store = make_store(tmp)
    store["paths"] = report.build_report(store["uri"], store["parent"], tmp / "report")
    return store


def test_pareto_front_is_non_dominated():
    pts = [(1, 0.5), (2, 0.7), (2, 0.6), (3, 0.65), (4, 0.9), (0.5, 0.1), (4, 0.9)]
    front = report.pareto_front(pts)
    assert [pts[i] for i in front] == [(0.5, 0.1), (1, 0.5), (2, 0.7), (4, 0.9)]
    for i in front:  # nothing dominates a front point
        assert not any((x <= pts[i][0] and y >= pts[i][1]) and (x, y) != pts[i] for x, y in pts)
    assert report.pareto_front([]) == []


def test_split_module_and_grid_from_ranks():
    assert report.split_module("bert.encoder.layer.3.attention.self.query") == (3, "attention.self.query")
    assert report.split_module("classifier") is None
    rep = {"ranks": {NAMES[0]: 4, NAMES[4]: 12, NAMES[17]: 0}, "selected_adapters": [NAMES[0], NAMES[4]]}
    g = report.selection_grid(rep, ("importance", "ranks"))
    assert g["field"] == "ranks" and g["label"] == "final rank"
    assert g["modules"] == ["query", "key", "value"]
    assert g["layers"] == list(range(6))  # from layer 0 to the last one named
    assert g["grid"][0, 0] == 4 and g["grid"][1, 1] == 12 and g["grid"][5, 2] == 0 and g["grid"].sum() == 16
    # survivors only (random select): n_adapters gives the full grid
    g = report.selection_grid({"n_adapters": 18, "ranks": {NAMES[0]: 8, NAMES[5]: 8}}, ("ranks",))
    assert g["grid"].shape == (6, 3) and g["selected"].sum() == 2 and g["modules"] == ["query", "key", "value"]
    g = report.selection_grid({"n_adapters": 12, "ranks": {NAMES[15]: 8, NAMES[17]: 8}}, ("ranks",))
    assert g["modules"] == ["query", "value"] and g["layers"] == list(range(6))  # targets were query,value
    assert g["selected"].sum() == 2
    assert report.selection_grid({"ranks": {}}, ("ranks",)) is None


def test_table_shape_values_and_mean_std(built):
    exp = built["expected"]
    paths = built["paths"]
    rows = list(csv.DictReader(paths["table_csv"].open()))
    # method rows in the papers' order, one column group per task, plus the average
    assert [r["method"] for r in rows] == ["lora", "random_select", "weightlora", "weightlora_plus"]
    by = {r["method"]: r for r in rows}
    for (method, task), best in exp["best"].items():
        if (method, task) == ("weightlora", "sst2"):
            continue
        assert float(by[method][f"{task}_mean"]) == pytest.approx(best)
        assert by[method][f"{task}_n"] == "1"
    # seed re-runs replace the best trial with mean ± sample std
    vals = built["seed_vals"]
    assert float(by["weightlora"]["sst2_mean"]) == pytest.approx(np.mean(vals))
    assert float(by["weightlora"]["sst2_std"]) == pytest.approx(np.std(vals, ddof=1))
    assert by["weightlora"]["sst2_n"] == "3"
    avg = (float(by["lora"]["sst2_mean"]) + float(by["lora"]["mrpc_mean"])) / 2
    assert float(by["lora"]["avg"]) == pytest.approx(avg)
    # # Params: besides the head (best trial, trial 1, of each task)
    assert float(by["lora"]["params"]) == pytest.approx(86001 - 1000)

    md = paths["table_md"].read_text()
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert lines[0] == "| Method | # Params | SST-2 Acc | MRPC Acc/F1 | Avg |"
    assert len(lines) == 2 + 4
    wl = next(ln for ln in lines if ln.startswith("| WeightLoRA (r=8, K=4)"))
    assert "0.8600±0.0200" in wl
    mrpc_cell = next(ln for ln in lines if ln.startswith("| LoRA")).split(" | ")[3]
    assert mrpc_cell == "0.8100/0.8600"  # accuracy / F1, as in the papers' MRPC column
    assert "\n".join(lines).count("**") == 2 * 3  # best of SST-2, MRPC and Avg in bold
    assert "Protocol: **papers**" in md  # a sweep without --protocol: dev both chooses and reports
    assert "20.0K (0.0881%)" in wl  # besides the head: seed runs on SST-2 (20,000), best trial on MRPC (20,001)


def test_pareto_png_points_and_front(built):
    paths, exp = built["paths"], built["expected"]
    assert_png(paths["pareto"])
    meta = json.loads((paths["pareto"].parent / "pareto.json").read_text())
    assert meta["n_points"] == sum(exp["points"].values()) == 24  # failed trial excluded
    for task, n in exp["points"].items():
        pts = meta["tasks"][task]["points"]
        assert len(pts) == n
        front = set(meta["tasks"][task]["front"])
        xy = {p["run_id"]: (p["params"], p["metric"]) for p in pts}
        idx = report.pareto_front(list(xy.values()))
        assert front == {list(xy)[i] for i in idx}
        assert sum(p["status"] == "asha_stopped" for p in pts) == 4


def test_selection_heatmaps_cells(built):
    paths = built["paths"]
    names = sorted(p.name for p in paths["selection"])
    assert names == [
        f"selection_{t}_{m}.png" for t in ("mrpc", "sst2") for m in ("random_select", "weightlora", "weightlora_plus")
    ]
    for p in paths["selection"]:
        assert_png(p)
        cells = json.loads(p.with_suffix(".json").read_text())
        assert cells["n_cells"] == LAYERS * len(MODULES)
        assert cells["layers"] == list(range(LAYERS)) and cells["modules"] == list(MODULES)
        assert np.asarray(cells["selected"]).sum() == 4
        if "random_select" in p.name:
            assert cells["label"] == "final rank"
            assert sorted(v for row in cells["values"] for v in row)[-4:] == [8, 8, 8, 8]
        else:
            assert cells["label"] == "|ω| at selection"
            # the starred cells are exactly the top-4 |ω|
            v, s = np.asarray(cells["values"]), np.asarray(cells["selected"], bool)
            assert v[s].min() >= v[~s].max()


def test_selection_overview(built):
    paths = built["paths"]
    assert_png(paths["selection_overview"])
    ov = paths["meta"]["selection_overview"]
    assert ov == {"methods": ["random_select", "weightlora", "weightlora_plus"], "tasks": ["sst2", "mrpc"], "panels": 6}


def test_curves_and_cost(built):
    paths = built["paths"]
    assert [p.name for p in paths["curves"]] == ["curves_sst2.png", "curves_mrpc.png"]
    for p in paths["curves"]:
        assert_png(p)
    lines = paths["meta"]["curves"]["sst2"]
    assert set(lines) == {"lora", "random_select", "weightlora", "weightlora_plus"}
    assert all(v["eval_points"] == 3 and v["loss_points"] == 3 for v in lines.values())
    cost = json.loads(paths["cost"].read_text())
    assert cost["trials"] == 25 and cost["asha_stopped"] == 8 and cost["failed"] == 1
    assert cost["trial_epochs_spent"] == 16 * 3 + 8 * 1
    assert cost["full_budget_trial_epochs"] == 25 * 3
    assert cost["saved_fraction"] == pytest.approx(1 - 56 / 75, abs=1e-4)
    assert cost["epochs_per_full_trial"] == {"sst2": 3, "mrpc": 3}
    assert cost["seed_runs"] == 3 and cost["wall_seconds"] is not None and not math.isnan(cost["wall_seconds"])


def test_artifacts_logged_to_parent(built):
    client, parent = built["client"], built["parent"]
    top = {a.path for a in client.list_artifacts(parent)}
    assert "report" in top and "results" not in top  # results/ is the sweep's own table
    logged = {a.path.split("/", 1)[1] for a in client.list_artifacts(parent, "report")}
    assert {"table.md", "pareto.png", "cost.json", "report.md", "curves_sst2.png"} <= logged
    page = built["paths"]["report_md"].read_text()
    assert "![pareto](pareto.png)" in page and "unit-sweep" in page


def test_cli(built, tmp_path, capsys):
    paths = report.main(["--tracking-uri", built["uri"], "--run-id", built["parent"], "--out", str(tmp_path / "cli")])
    assert paths["table_md"] == tmp_path / "cli" / "table.md"
    assert "| Method | # Params |" in capsys.readouterr().out


def test_cost_budget_per_task():
    """Epoch budgets differ per task (``--max-steps``): each task's trials are measured against its own."""

    class P:
        info = type("I", (), {"start_time": 0, "end_time": 60_000})()
        data = type("D", (), {"params": {"max_epochs": "3"}})()

    def run(task, status, epoch, secs):
        r = report.RunInfo("id", "n", "trial", "lora", task, "0", status, {}, {"epoch": epoch}, 0, secs * 1000)
        return r

    kids = [
        run("sst2", "completed", 0.02, 100),
        run("sst2", "asha_stopped", 0.01, 50),
        run("rte", "completed", 0.5, 100),
    ]
    c = report.sweep_cost(P, kids)
    assert c["epochs_per_full_trial"] == {"sst2": 0.02, "rte": 0.5}
    assert c["full_budget_trial_epochs"] == pytest.approx(0.04 + 0.5)
    assert c["trial_epochs_spent"] == pytest.approx(0.53)
    assert c["full_budget_trial_seconds_est"] == pytest.approx(150 / 0.03 * 0.04 + 100)
    assert c["wall_seconds"] == 60


def _ink_at_edges(img: np.ndarray, width: int = 2) -> bool:
    """Whether anything is drawn in the outer ``width`` pixels (a cut-off title or label reaches the edge)."""
    rgb = img[..., :3]
    border = np.concatenate(
        [
            rgb[:width].reshape(-1, 3),
            rgb[-width:].reshape(-1, 3),
            rgb[:, :width].reshape(-1, 3),
            rgb[:, -width:].reshape(-1, 3),
        ]
    )
    return bool((border < 0.9).any())


def test_no_plot_is_clipped(built):
    """Every figure of the report, rendered: nothing reaches the image's edge (a clipped title would)."""
    pngs = sorted(Path(built["paths"]["pareto"]).parent.glob("*.png"))
    assert len(pngs) >= 4, pngs
    for png in pngs:
        img = assert_png(png)
        assert not _ink_at_edges(img), png.name


def test_a_long_title_stays_inside_the_image(tmp_path):
    """A title far wider than its axes: the saved image grows to hold it, and the title's box lies inside."""
    import matplotlib.pyplot as plt

    from sweeps.report.figures import save_figure

    fig, ax = plt.subplots(figsize=(2.5, 2.0))
    ax.plot([0, 1], [0, 1])
    fig.suptitle("A very long title that is much wider than this small figure would ever be " * 2)
    ax.set_title("and an axes title that is long too, far past the right edge")
    meta = save_figure(fig, tmp_path / "long.png")
    x0, y0, w, h = meta["image"]
    for bx, by, bw, bh in meta["titles"]:
        assert x0 <= bx and bx + bw <= x0 + w and y0 <= by and by + bh <= y0 + h
    img = assert_png(tmp_path / "long.png")
    assert img.shape[1] > 2.5 * 110 * 2  # wider than the 2.5-inch figure: it grew to the title
    assert not _ink_at_edges(img)
