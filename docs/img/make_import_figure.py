"""Draw docs/img/import_frames.png: poses after import, rendered by poserft.data.render (front camera, y up).

python docs/img/make_import_figure.py   (writes fixtures in a temporary folder; no real data used)
"""

import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from poserft.data.dataset import load_split  # noqa: E402
from poserft.data.importers import import_3dpw, import_posescript  # noqa: E402
from poserft.data.render import render_grid  # noqa: E402
from tests.import_fixtures import to_amass, write_3dpw, write_amass_npz, write_posescript  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    fx = write_posescript(tmp / "ps_src", n_poses=10, seed=2)
    standing = np.zeros((10, 24, 3))  # frame 0: the rest pose, stored z-up with a random heading
    standing[1:] = np.stack([fx["poses"][i] for i in range(1, 10)])
    write_amass_npz(fx["amass"] / "Fixture/S000/seq0000000_poses.npz", to_amass(standing, np.random.default_rng(7)))
    import_posescript(fx["posescript"], fx["amass"], tmp / "ps", captions="auto", progress=False)
    ps = load_split(tmp / "ps", "train", task="text2pose")
    pick = [ps["pose_id"].to_pylist().index(i) for i in (0, 3)]
    write_3dpw(tmp / "pw_src", frames=2, people=1, size=(360, 480), seed=3)
    import_3dpw(tmp / "pw_src", tmp / "pw", image_size=128, progress=False)
    pw = load_split(tmp / "pw", "train").to_pylist()[0]

    joints = [np.asarray(ps["target_joints"][i].as_py()).reshape(24, 3) for i in pick]
    joints.append(np.asarray(pw["target_joints"]).reshape(24, 3))
    captions = [
        "AMASS rest pose (z-up, random heading) after import",
        "AMASS pose from the prior after import",
        "3DPW target pose (camera view, y up)",
    ]
    grid = render_grid(joints, captions, size=256)
    crop = Image.open(io.BytesIO(pw["image"])).convert("RGB").resize((256, 256), Image.NEAREST)
    out = Image.new("RGB", (grid.width + 256, grid.height))
    out.paste(grid, (0, 0))
    out.paste(crop, (grid.width, 0))
    out.save(Path(__file__).with_name("import_frames.png"))
    print("wrote", Path(__file__).with_name("import_frames.png"))
