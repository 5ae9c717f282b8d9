"""`poserft eval` on a data set that holds only some of the tasks (an imported PoseScript folder
has text2pose and pose2text, 3DPW only image2pose): the tasks present are evaluated, the others
are left out of the JSON and shown as `-` in the table, instead of an error."""

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from poserft.common.config import RetrieverTrainConfig
from poserft.data.dataset import CARD_NAME
from poserft.evaluate import eval_table, evaluate_policy


def _only(tiny_data, tasks: set[str], out):
    """A copy of the data folder with only `tasks` in every split (the card's counts updated)."""
    shutil.copytree(tiny_data, out)
    card = json.loads((out / CARD_NAME).read_text())
    for split in ("train", "val", "test"):
        table = pq.read_table(out / f"{split}.parquet")
        keep = table.filter(pc.is_in(table["task"], value_set=pa.array(sorted(tasks))))
        pq.write_table(keep, out / f"{split}.parquet")
        card["splits"][split]["rows"] = keep.num_rows
    (out / CARD_NAME).write_text(json.dumps(card))
    return out


@pytest.fixture(scope="module")
def evaluator(tiny_data, tmp_path_factory):
    from poserft.reward_service.retriever_train import train_retriever

    out = tmp_path_factory.mktemp("evaluator")
    settings = RetrieverTrainConfig(seed=2, half=1, epochs=1, batch_size=128, caption_variants=1, threads=1)
    train_retriever(tiny_data, out, settings, progress=False)
    return out


def test_a_text_only_set_evaluates_its_tasks(tiny_data, tiny_sft, evaluator, tmp_path):
    data = _only(tiny_data, {"text2pose", "pose2text"}, tmp_path / "text_only")
    res = evaluate_policy(tiny_sft, data, evaluator, tmp_path / "eval", limit=8, max_new_tokens=24)
    assert res["tasks"] == ["text2pose", "pose2text"] and "image2pose" not in res
    assert res["text2pose"]["n"] == 8 and res["pose2text"]["n"] == 8
    table = eval_table({"sft": res})
    assert (
        "| image2pose PA-MPJPE (mm) | - |" in table
        and "| rows evaluated (n): image2pose / text2pose / pose2text | - / 8 / 8 |" in table
    )


def test_an_image_only_set_evaluates_image2pose(tiny_data, tiny_sft, evaluator, tmp_path):
    data = _only(tiny_data, {"image2pose"}, tmp_path / "image_only")
    res = evaluate_policy(tiny_sft, data, evaluator, None, limit=8, max_new_tokens=24)
    assert res["tasks"] == ["image2pose"] and res["image2pose"]["n"] == 8
    assert res["image2pose"]["pa_mpjpe_mm"] > 0
