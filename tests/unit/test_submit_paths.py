"""`poserft submit` hands the job every path in a form the job can use: the folders of a
`data.sources` mixture too (relative inside the upload, absolute elsewhere, with a warning for a
folder in an excluded directory)."""

import shlex

from poserft.cluster.jobs import plan_submit
from poserft.common.config import load_config, parse_override


def test_mixture_folders_are_resolved_for_the_job(tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "imports" / "ps").mkdir(parents=True)
    (work / "data" / "pw").mkdir(parents=True)  # data/ is not uploaded with a job
    outside = tmp_path / "shared" / "own"
    outside.mkdir(parents=True)
    (work / "cfg.yaml").write_text(
        "data:\n  sources:\n"
        "    - {dir: imports/ps, weight: 2}\n"
        "    - {dir: data/pw, weight: 1}\n"
        f"    - {{dir: {outside}, weight: 1, pose_only: true}}\n"
    )
    (work / "ckpt").mkdir()
    monkeypatch.chdir(work)
    entry, paths = plan_submit("cfg.yaml", "ckpt", "runs/r", [], working_dir=str(work))
    sets = [a.split("=", 1) for a in shlex.split(entry) if "=" in a]
    sources = dict(parse_override("=".join(kv)) for kv in sets)["data.sources"]
    assert [s["dir"] for s in sources] == ["imports/ps", str(work / "data" / "pw"), str(outside)]
    assert [s["weight"] for s in sources] == [2, 1, 1] and sources[2]["pose_only"] is True
    warned = {p.key: p.warning for p in paths if p.warning}
    assert "data/" in warned["data.sources[1].dir"] and "data.sources[0].dir" not in warned
    # what the job's config becomes with those overrides
    cfg = load_config("cfg.yaml", ["=".join(kv) for kv in sets if kv[0].startswith("data.")])
    assert [s.dir for s in cfg.data.sources] == [s["dir"] for s in sources]
