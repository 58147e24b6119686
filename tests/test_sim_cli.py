"""`toptheta simulate` and `toptheta simulate-kernel`: outputs and bad input."""

import json

from test_sim_stats import make_stats

from topθ_hw.cli import main
from topθ_hw.tables import read_table, write_table


def test_simulate_kernel_json(capsys):
    rc = main(["simulate-kernel", "--hardware", "h100", "--batch", "2", "--context", "8192", "--q-heads", "32",
               "--kv-heads", "8", "--head-dim", "128", "--dtype", "bf16", "--kept-v-fraction", "0.25",
               "--fetch", "page16", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["time_s"] > 0 and set(out["bytes"]) >= {"k", "v", "scores", "thresholds"}
    assert out["bytes"]["k"] == 2 * 8 * 8192 * 256 and out["bytes"]["v"] == 2 * 8 * 128 * 16 * 256


def test_simulate_writes_sim_results(tmp_path, capsys):
    df, meta = make_stats()
    write_table(df, tmp_path / "stats.parquet", meta)
    rc = main(["simulate", "--hardware", "h100", "--stats", str(tmp_path / "stats.parquet"),
               "--out", str(tmp_path / "sim.parquet")])
    assert rc == 0
    sim, sim_meta = read_table(tmp_path / "sim.parquet", kind="sim-results")
    assert sim_meta["device"] == "h100" and sim_meta["method"] == "toptheta"
    for col in ("time_s", "bytes_k", "bytes_v", "bytes_scores", "bytes_thresholds", "flops", "energy_j",
                "roofline_time_s", "utilisation", "layer", "scope", "phase", "step", "sequence"):
        assert col in sim.columns, col
    layers, steps = sim[sim["scope"] == "layer"], sim[sim["scope"] == "step"]
    assert len(layers) == 2 * 2 * (3 + 1)             # sequences x layers x (decode steps + prefill)
    assert len(steps) == 2 * (3 + 1) and (steps["layer"] == -1).all()
    one = steps[(steps["sequence"] == "seq_0000") & (steps["step"] == 1)]
    part = layers[(layers["sequence"] == "seq_0000") & (layers["step"] == 1)]
    assert one["time_s"].item() == part["time_s"].sum() and one["bytes_v"].item() == part["bytes_v"].sum()


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    assert main(["simulate-kernel", "--hardware", "tpu-v9", "--batch", "1", "--context", "64"]) == 2
    assert "known devices: a100, b200, h100, h200, mi300x, npu, tpu-v5e" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[compute\n")
    assert main(["simulate-kernel", "--hardware", str(bad), "--batch", "1", "--context", "64"]) == 2
    assert "bad.toml: invalid TOML" in capsys.readouterr().err
    df, meta = make_stats()
    write_table(df, tmp_path / "stats.parquet", {**meta, "n_kv_heads": 4, "n_q_heads": 8})
    assert main(["simulate", "--hardware", "h100", "--stats", str(tmp_path / "stats.parquet"),
                 "--out", str(tmp_path / "o.parquet")]) == 2
    assert "metadata n_kv_heads = 4" in capsys.readouterr().err
    assert main(["simulate-kernel", "--hardware", "h100", "--batch", "1", "--context", "4096",
                 "--head-dim", "1024", "--dtype", "fp32", "--kv-heads", "8", "--q-heads", "8"]) == 2
    assert "KiB of SRAM per unit" in capsys.readouterr().err
