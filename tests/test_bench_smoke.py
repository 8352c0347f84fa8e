"""`pallas_kernels.bench --quick` runs on CPU and prints its tables (format only, no timings)."""

import re

import pytest

from pallas_kernels import bench

NUMBER = r"[0-9]+\.[0-9]+"


def _run(capsys, argv):
  assert bench.main(argv) == 0
  return capsys.readouterr().out


def _table_rows(out, first_header):
  """Data rows (lists of cells) of the markdown table whose first header cell is given."""
  lines = out.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
  assert set(lines[start + 1]) <= set("|-")
  rows = []
  for line in lines[start + 2 :]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip("|").split("|")])
  return lines[start], rows


def test_quick_bench_prints_scan_table_for_every_stage_and_the_long_shape(capsys):
  out = _run(capsys, ["--quick", "--impl", "sequential", "--impl-ref", "sequential"])
  assert re.search(
    r"^device: .+ \(cpu\), jax [0-9.]+\S*, \d{4}-\d\d-\d\d \d\d:\d\d UTC$", out, re.M
  )
  assert re.search(rf"^copy bandwidth: {NUMBER} GB/s", out, re.M)
  assert "reads u, delta, B, C; writes y" in out
  assert "reads u, delta, B, C, dy; writes du, ddelta, dB, dC" in out
  header, rows = _table_rows(out, "shape")
  n_cols = header.count("|") - 1
  assert [r[0] for r in rows] == ["stage 1", "stage 2", "stage 3", "stage 4", "long"]
  for row in rows:
    assert len(row) == n_cols
    # Every cell measured: times, MB, GB/s, % of copy bandwidth, speed-ups.
    assert all(re.fullmatch(rf"{NUMBER}(%|x)?", cell) for cell in row[5:]), row
  # --quick shapes: batch 1, 32 frames -> L = 256 / 4^i, K*D = 384 * 2^i; long 8 x 4096.
  assert [(r[2], r[3]) for r in rows] == [
    ("384", "256"),
    ("768", "64"),
    ("1536", "16"),
    ("3072", "4"),
    ("8", "4096"),
  ]
  # fwd MB of stage 1: (2*384*256 + 2*4*256) * 4 + 384*256 * 4 bytes.
  assert rows[0][6] == f"{((2 * 384 * 256 + 2 * 4 * 256) * 4 + 384 * 256 * 4) / 1e6:.1f}"
  assert "SS2D core" not in out and "Failures" not in out


def test_quick_bench_runs_pallas_in_interpret_mode(capsys):
  # With the launch options the GPU check measures (interpret mode ignores num_warps).
  argv = ["--quick", "--stages", "4", "--long-length", "0", "--num-warps", "4", "--chunk-size", "2"]
  out = _run(capsys, argv)
  assert "impl pallas {'num_warps': 4, 'chunk_size': 2} vs reference associative" in out
  assert "interpret mode" in out
  _, rows = _table_rows(out, "shape")
  assert [r[0] for r in rows] == ["stage 4"]
  assert "n/a" not in rows[0]
  assert "Failures" not in out, out
  _, ss2d_rows = _table_rows(out, "shape | H x W")
  assert ss2d_rows == [ss2d_rows[0]] and ss2d_rows[0][:3] == ["stage 4", "4 x 1", "768"]
  assert "n/a" not in ss2d_rows[0]


def test_bad_stage_is_rejected():
  with pytest.raises(SystemExit):
    bench.parse_args(["--stages", "5"])
  with pytest.raises(SystemExit):  # launch options are the Pallas kernels'
    bench.parse_args(["--impl", "chunked", "--num-warps", "4"])


def test_quick_bench_times_the_chunked_scan_and_its_ss2d_route(capsys):
  out = _run(capsys, ["--quick", "--impl", "chunked", "--stages", "3", "--long-length", "0"])
  assert "interpret mode" not in out and "Failures" not in out, out
  _, rows = _table_rows(out, "shape")
  assert [r[0] for r in rows] == ["stage 3"] and "n/a" not in rows[0]
  header, ss2d_rows = _table_rows(out, "shape | H x W")
  assert "associative unfused fwd ms" in header and "own route fwd ms" in header
  assert ss2d_rows[0][:3] == ["stage 3", "8 x 2", "384"]
  assert all(re.fullmatch(rf"{NUMBER}x?", cell) for cell in ss2d_rows[0][3:]), ss2d_rows


def test_stage_shapes_follow_the_model_at_awkward_frame_counts():
  """PyTorch's stride-2 convs round up: 1028 frames give a 32 x 257 stage-1 map (8224 tokens,
  which no chunk length divides; the GPU check benchmarks it), 1000 frames a 32 x 250 one."""
  assert [(s.height, s.width, s.d) for s in bench.dass_stages(12, 1028)] == [
    (32, 257, 96),
    (16, 129, 192),
    (8, 65, 384),
    (4, 33, 768),
  ]
  assert [(s.height, s.width) for s in bench.dass_stages(1, 1000)] == [
    (32, 250),
    (16, 125),
    (8, 63),
    (4, 32),
  ]
  assert [s.length for s in bench.dass_stages(1, 1024)] == [8192, 2048, 512, 128]


def test_failed_timings_give_exit_status_1(capsys, monkeypatch):
  def broken(*args):
    raise RuntimeError("no kernel")

  monkeypatch.setattr(bench, "forward_and_step", lambda fn: (broken, broken))
  assert bench.main(["--quick", "--impl", "sequential", "--stages", "4", "--long-length", "0"]) == 1
  assert "Failures (shown as n/a above)" in capsys.readouterr().out
