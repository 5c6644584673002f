import csv
import subprocess
import sys

import pytest

from reaper_core.cli import main
from reaper_core.config import Settings, load_settings, save_settings
from reaper_core.errors import ConfigError

CONTRACT = {"file", "sector", "camera", "ccd", "x", "y", "ra", "dec", "score", "is_anomaly",
            "label"}


def test_cli_round_trip_ingest_score_export(tmp_path, spoc_file, tica_file, hdf_file, capsys):
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    bad = tmp_path / "photo.fits"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    rc = main(["ingest", "--db-url", db, str(spoc_file), str(tica_file), str(hdf_file), str(bad)])
    out = capsys.readouterr().out
    assert rc == 1  # one file failed, and the exit code says so
    assert "photo.fits: is not a FITS file but a PNG image" in out
    assert "summary: 3 added, 0 duplicate, 1 failed, model fitted" in out
    assert main(["ingest", "--db-url", db, str(hdf_file)]) == 0
    assert "1 duplicate" in capsys.readouterr().out

    assert main(["score", "--db-url", db, "--mode", "percentile", "--value", "95", "--top", "3",
                 "--explain", "2"]) == 0
    out = capsys.readouterr().out
    assert "(percentile 95)" in out and "cutout " in out and "%" in out

    csv_path = tmp_path / "out.csv"
    assert main(["export", "--db-url", db, "-o", str(csv_path)]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert CONTRACT <= set(rows[0])
    files = {r["file"] for r in rows}
    assert files == {spoc_file.name, tica_file.name, hdf_file.name}
    flagged = [r for r in rows if r["is_anomaly"] == "True"]
    assert 0.03 < len(flagged) / len(rows) < 0.08  # the 95th percentile threshold
    spoc_rows = [r for r in rows if r["file"] == spoc_file.name]
    assert all(r["sector"] == "7" and r["camera"] == "2" and r["ccd"] == "3" for r in spoc_rows)
    assert all(r["ra"] != "" for r in spoc_rows)
    hdf_rows = [r for r in rows if r["file"] == hdf_file.name]
    assert all(r["ra"] == "" and r["sector"] == "" for r in hdf_rows)
    assert all(0 <= float(r["x"]) < 1000 and 0 <= float(r["y"]) < 872 for r in hdf_rows)

    # One per object: the top 20 objects, each by its best cutout, no object twice.
    assert main(["score", "--db-url", db, "--top", "20", "--one-per-object"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["cutout_id"])
    assert lines[header].split()[-1] == "n_cutouts"
    listed = [int(ln.split()[0]) for ln in lines[header + 1:]]
    by_id = {int(r["cutout_id"]): r for r in rows}

    def obj(r):  # a cutout without a segment is an object of its own
        return (r["file"], r["segment"]) if r["segment"] not in ("", "0") else r["cutout_id"]

    objs = [obj(by_id[c]) for c in listed]
    assert len(listed) == 20 and len(set(objs)) == 20
    ranked = sorted(rows, key=lambda r: -float(r["score"]))
    assert listed[0] == int(ranked[0]["cutout_id"])
    best = {}
    for r in ranked:
        best.setdefault(obj(r), int(r["cutout_id"]))
    assert all(best[o] == c for o, c in zip(objs, listed, strict=True))

    # Label the top three objects normal, every cutout of each; the next fit counts them more.
    members = {c: [int(r["cutout_id"]) for r in rows if obj(r) == obj(by_id[c])]
               for c in listed[:3]}
    assert main(["label", "--db-url", db, *map(str, listed[:3]), "--as", "normal",
                 "--object"]) == 0
    n = sum(map(len, members.values()))
    assert capsys.readouterr().out.startswith(f"labelled normal {n} cutouts; run `anomaly-rea")
    assert main(["fit", "--db-url", db, "--n-components", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 components" in out and f"{n} of them labelled normal" in out
    assert main(["export", "--db-url", db, "-o", str(csv_path)]) == 0
    with open(csv_path, newline="") as fh:
        labels = {int(r["cutout_id"]): r["label"] for r in csv.DictReader(fh)}
    assert {c for c, lab in labels.items() if lab == "normal"} == set().union(*members.values())
    assert main(["label", "--db-url", db, str(listed[0]), "--as", "none"]) == 0
    assert main(["label", "--db-url", db, "999999", "--as", "normal"]) == 2
    assert main(["label", "--db-url", db, str(listed[0]), "--as", "boring"]) == 2
    err = capsys.readouterr().err
    assert "no cutout with id 999999" in err and "--as must be one of" in err

    # Remove a file: its cutouts go, the model is fitted anew on the others; an unknown name
    # is one line and removes nothing.
    assert main(["remove", "--db-url", db, "nothing.fits"]) == 2
    assert "no stored file is named 'nothing.fits'" in capsys.readouterr().err
    assert main(["remove", "--db-url", db, hdf_file.name]) == 0
    out = capsys.readouterr().out
    assert out.startswith("removed 1 file (") and "the model was fitted anew" in out
    assert main(["export", "--db-url", db, "-o", str(csv_path)]) == 0
    with open(csv_path, newline="") as fh:
        assert {r["file"] for r in csv.DictReader(fh)} == {spoc_file.name, tica_file.name}


def test_cli_errors_are_one_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["score", "--db-url", db]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no model yet") and "\n" not in err
    assert main(["ingest", "--db-url", db, str(tmp_path / "nothing*.fits")]) == 1
    assert "does not exist" in capsys.readouterr().out
    # Counts are whole numbers from 1 (0 for "none"): a negative --top printed every row.
    for args, least in ((["score", "--top", "-1"], 0), (["rerank", "--top", "-3"], 1),
                        (["similar", "1", "--top", "0"], 1), (["fit", "--workers", "x"], 1)):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--db-url", db])
        assert exit_info.value.code == 2
        assert f"must be a whole number ≥ {least}, not" in capsys.readouterr().err
    for bad in ("0", "2.5", "-1"):  # (0 and -1 fitted 5 components, 2.5 fitted 2)
        assert main(["fit", "--db-url", db, "--n-components", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"error: n_components must be a whole number ≥ 1 or a fraction of "
                       f"variance between 0 and 1, not {float(bad):g}")


def test_cli_ingest_of_folders_says_what_it_skipped(tmp_path, hdf_file, capsys):
    """A folder holding no FITS file is one error naming it (it was "no files match"); the
    files of a folder that are not FITS by name are counted and named in a note."""
    db = f"sqlite:///{tmp_path / 'x.db'}"
    empty = tmp_path / "notes"
    empty.mkdir()
    (empty / "log.txt").write_text("seeing 1.2")
    data = tmp_path / "night1"
    data.mkdir()
    (data / "field.fits").write_bytes(hdf_file.read_bytes())
    (data / "finder.png").write_bytes(b"png")
    assert main(["ingest", "--db-url", db, str(empty), str(data)]) == 1
    out = capsys.readouterr().out
    assert "note: 2 files in the folders skipped, not FITS by name (log.txt, finder.png)" in out
    assert "notes: is a folder holding no FITS file (no name ending .fits" in out
    assert "added     field.fits" in out and "summary: 1 added, 0 duplicate, 1 failed" in out
    assert main(["events", "--db-url", db, str(empty)]) == 2  # was "cannot use notes: Is a …"
    assert capsys.readouterr().err.startswith("error: notes: is a folder holding no FITS file")


def test_help_on_every_command(capsys):
    r = subprocess.run([sys.executable, "-m", "reaper_core.cli", "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "usage: anomaly-reaper" in r.stdout
    for cmd in ("run", "ingest", "fit", "score", "label", "export", "configure", "demo"):
        with pytest.raises(SystemExit) as info:
            main([cmd, "--help"])
        assert info.value.code == 0
        assert f"usage: anomaly-reaper {cmd}" in capsys.readouterr().out


def test_configure_persists_and_env_overrides(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.toml"
    assert main(["configure", "--config", str(cfg), "--threshold", "3",
                 "--embedder", "hog", "--db-url", "sqlite:///x.db"]) == 0
    s = load_settings(cfg)
    assert (s.threshold_value, s.embedder, s.db_url) == (3.0, "hog", "sqlite:///x.db")
    monkeypatch.setenv("ANOMALY_REAPER_DB_URL", "postgresql://u@localhost/reaper")
    monkeypatch.setenv("ANOMALY_REAPER_THRESHOLD_VALUE", "2.5")
    s = load_settings(cfg)
    assert s.db_url == "postgresql://u@localhost/reaper" and s.threshold_value == 2.5
    assert load_settings(cfg, db_url="sqlite:///flag.db").db_url == "sqlite:///flag.db"


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="threshold_mode"):
        Settings(threshold_mode="vibes")
    with pytest.raises(ConfigError, match="percentile"):
        Settings(threshold_mode="percentile", threshold_value=150)
    with pytest.raises(ConfigError, match="unknown setting"):
        save_settings({"colour": "red"}, tmp_path / "c.toml")
    (tmp_path / "bad.toml").write_text("this is = = not toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(tmp_path / "bad.toml")


def test_config_written_with_a_retired_setting_still_loads(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('models_dir = "/old/models"\nthreshold_value = 3.0\n')
    assert load_settings(cfg).threshold_value == 3.0
    save_settings({"embedder": "hog"}, cfg)
    assert "models_dir" not in cfg.read_text() and load_settings(cfg).embedder == "hog"


def test_report_pdf_and_png(tmp_path, hdf_file, spoc_file, capsys):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert main(["ingest", "--db-url", db, str(hdf_file), str(spoc_file)]) == 0
    assert main(["report", "--db-url", db, "-o", str(tmp_path / "run.pdf"), "--top", "12"]) == 0
    pdf = (tmp_path / "run.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(
        b"/Type /Page ") == 3
    assert main(["report", "--db-url", db, "-o", str(tmp_path / "run.png")]) == 0
    pngs = sorted(tmp_path.glob("run-*.png"))
    assert [p.name for p in pngs] == ["run-1.png", "run-2.png", "run-3.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") and p.stat().st_size > 20_000
               for p in pngs)
    capsys.readouterr()
    assert main(["report", "--db-url", db, "-o", str(tmp_path / "run.svg")]) == 2
    assert "a report is a .pdf or .png file, not run.svg" in capsys.readouterr().err
