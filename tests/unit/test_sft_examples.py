"""SFT examples: batch order (sft.group_by_length, sft.task_weights) and text2pose targets."""

import numpy as np

from poserft.learner.sft import GROUP_BATCHES, EpochBatches, batch_indices


def test_every_row_once_per_epoch_in_batches_of_similar_length():
    rng = np.random.default_rng(0)
    lengths = rng.choice([20, 40, 150], size=5000)  # register captions, images, pose2text answers
    batches = EpochBatches(lengths, 32, seed=3)
    per_epoch = batches.per_epoch
    assert per_epoch == -(-5000 // 32)
    for epoch in (0, 1):
        rows = np.concatenate([batches(epoch * per_epoch + k) for k in range(per_epoch)])
        assert sorted(rows.tolist()) == list(range(5000))
    padded = sum(lengths[batches(k)].max() * len(batches(k)) for k in range(per_epoch))
    plain = sum(lengths[batch_indices(5000, 32, 3, k)].max() * 32 for k in range(per_epoch))
    assert padded < 0.6 * plain  # most batches hold one length only
    assert padded >= lengths.sum()


def test_order_is_a_function_of_seed_and_step():
    lengths = np.arange(1000) % 17
    a, b = EpochBatches(lengths, 16, seed=1), EpochBatches(lengths, 16, seed=1)
    late = [a(k) for k in (70, 3, 140, 3)]  # out of order and across epochs, as a resumed run asks
    assert all(np.array_equal(x, b(k)) for x, k in zip(late, (70, 3, 140, 3)))
    other = EpochBatches(lengths, 16, seed=2)
    assert not all(np.array_equal(a(k), other(k)) for k in range(5))
    assert not np.array_equal(a(0), a(a.per_epoch))  # each epoch has its own order


def test_groups_are_shuffled_not_sorted_over_the_epoch():
    lengths = np.arange(32 * GROUP_BATCHES * 3)
    b = EpochBatches(lengths, 32, seed=0)
    means = [lengths[b(k)].mean() for k in range(b.per_epoch)]
    assert means != sorted(means)


def test_task_weights_set_how_often_each_task_is_seen():
    from poserft.learner.sft import task_row_weights

    tasks = ["text2pose"] * 300 + ["image2pose"] * 200 + ["pose2text"] * 100
    assert task_row_weights(tasks, {}) is None and task_row_weights(tasks, {"pose2text": 1.0}) is None
    w = task_row_weights(tasks, {"text2pose": 2.5, "pose2text": 0})
    batches = EpochBatches(np.arange(600) % 7, 32, seed=0, weights=w, group=False)
    assert batches.rows_per_epoch == 750 + 200
    for epoch in (0, 1):
        rows = np.concatenate([batches(epoch * batches.per_epoch + k) for k in range(batches.per_epoch)])
        seen = np.bincount(rows, minlength=600)
        assert sorted(set(seen[:300])) == [2, 3] and seen[:300].sum() == 750
        assert (seen[300:500] == 1).all() and (seen[500:] == 0).all()
    assert task_row_weights(tasks[:300], {"image2pose": 1.5}) is None  # a task the split lacks changes nothing
    try:
        task_row_weights(tasks[:300], {"text2pose": 0})
    except ValueError as err:
        assert "weight 0" in str(err)
    else:
        raise AssertionError("weights that leave nothing to train on must be refused")


def test_text2pose_targets_face_forward_and_keep_their_body():
    import torch

    from poserft.common.body import BodyModel
    from poserft.common.metrics import yaw_mpjpe
    from poserft.common.rotations import axis_angle_to_matrix, axis_angle_to_rot6d
    from poserft.data.pose_prior import PosePrior
    from poserft.learner.sft import face_forward

    body = BodyModel()
    aa = torch.from_numpy(PosePrior(seed=4).sample(40)).float()
    joints = body.forward_kinematics(axis_angle_to_rot6d(aa).reshape(40, -1).double()).float()
    turned, turned_joints = face_forward(aa, joints)
    assert torch.equal(turned[:, 1:], aa[:, 1:])  # the body's own joints are untouched
    root = axis_angle_to_matrix(turned.double())[:, 0]
    heading = root[:, :, 2] + root[:, :, 1]  # forward + up axes, on the ground plane
    assert heading[:, 0].abs().max() < 1e-5 and (heading[:, 2] > 0).all()  # heading +z
    before = axis_angle_to_matrix(aa.double())[:, 0]
    assert before[:, 1, :].sub(root[:, 1, :]).abs().max() < 1e-5  # tilt kept: the axes' heights
    fk = body.forward_kinematics(axis_angle_to_rot6d(turned).reshape(40, -1).double()).float()
    assert (fk - turned_joints).abs().max() < 1e-5  # joints turned with the pose
    assert yaw_mpjpe(turned_joints.double(), joints.double()).max() < 1e-4  # the same pose up to facing


def test_lying_bodies_get_one_heading_whatever_their_yaw():
    """Lying on the back, the forward axis is vertical: the heading must come from the body's
    length (head direction), or the targets of one described pose scatter over all headings."""
    import math

    import torch

    from poserft.common.rotations import axis_angle_to_matrix, geodesic_angle, heading_undo

    def rot(axis: int, deg: float) -> torch.Tensor:
        v = torch.zeros(1, 3, dtype=torch.float64)
        v[0, axis] = math.radians(deg)
        return axis_angle_to_matrix(v)[0]

    canonical = []
    for yaw in (-170, -60, 0, 45, 120):
        for wobble in (-4, 0, 4):  # a few degrees of tilt either way off flat
            root = rot(1, yaw) @ rot(2, wobble) @ rot(0, -90 + wobble)  # supine, turned by yaw
            turned = heading_undo(root[None]) @ root[None]
            canonical.append(turned[0])
    spread = torch.stack(canonical)
    assert geodesic_angle(spread, spread[:1].expand_as(spread)).max() < math.radians(20)  # the wobble is up to 11
