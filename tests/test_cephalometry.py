"""The ISBI 2015 measurements on hand-made landmark sets whose angles are known by construction."""

import numpy as np
import pytest

from landmark_exp import cephalometry as ceph
from landmark_exp.cephalometry import ANS, GN, GO, LIT, ME, OR, PNS, PO, POG, UIT, A, B, N, S


def direction(deg: float) -> np.ndarray:
    """Unit vector at `deg` from +x, turning towards +y (down in an image)."""
    return np.array([np.cos(np.radians(deg)), np.sin(np.radians(deg))])


def face(sna=82.0, snb=78.0, ab_mp=72.0, pp=3.0, facial=93.0, ab_dir=100.0, fma=30.0, fhi=0.7, mw=3.0) -> np.ndarray:
    """A right-facing skeleton (mm, y down) built from the angles it should measure."""
    p = np.zeros((19, 2))
    p[S], p[N] = (0.0, 0.0), (70.0, 0.0)  # S-N horizontal
    p[A] = p[N] + 50 * direction(180 - sna)  # the ray N->S is 180 deg; A and B lie below it
    p[B] = p[N] + 90 * direction(180 - snb)
    p[PO], p[OR] = (-10.0, 20.0), (60.0, 20.0)  # FH horizontal, Po -> Or along +x
    p[PNS] = (20.0, 45.0)
    p[ANS] = p[PNS] + 50 * direction(pp)  # pp > 0: tips down anteriorly
    p[GO] = (0.0, 70.0)
    p[GN] = p[GO] + 80 * direction(fma)
    p[ME] = p[N] + np.array([0.0, 70.0 / fhi])  # |S-Go| = 70, |N-Me| = 70 / fhi
    p[POG] = p[N] + 100 * direction(facial)
    p[LIT] = (97.0, 50.0)
    p[UIT] = p[LIT] + (mw, 0.0)
    p[[12, 13, 14, 15, 18]] = [(110, 40), (108, 60), (105, 30), (100, 90), (5, 40)]
    return p


def set_direction(p: np.ndarray, frm: int, to: int, deg: float) -> np.ndarray:
    """Move landmark `to` so that frm -> to points at `deg`, keeping the distance."""
    p = p.copy()
    p[to] = p[frm] + np.linalg.norm(p[to] - p[frm]) * direction(deg)
    return p


def test_sna_snb_anb_and_their_classes():
    v = ceph.analyse(face(sna=82.0, snb=78.0))
    assert v["SNA"]["value"] == pytest.approx(82.0) and v["SNB"]["value"] == pytest.approx(78.0)
    assert v["ANB"]["value"] == pytest.approx(4.0)
    assert (v["SNA"]["class"], v["SNB"]["class"], v["ANB"]["class"]) == (1, 1, 1)
    v = ceph.analyse(face(sna=85.0, snb=73.0))  # ANB 12: class II, prognathic maxilla, retrognathic mandible
    assert (v["SNA"]["class"], v["SNB"]["class"], v["ANB"]["class"]) == (2, 2, 2)
    v = ceph.analyse(face(sna=78.0, snb=80.0))  # ANB -2: class III
    assert v["ANB"]["value"] == pytest.approx(-2.0)
    assert (v["SNA"]["class"], v["SNB"]["class"], v["ANB"]["class"]) == (3, 3, 3)
    assert v["ANB"]["label"] == "skeletal class III"


def test_a_value_on_a_threshold_counts_as_normal():
    on = {"ANB": 5.7, "SNB": 74.6, "SNA": 83.2, "ODI": 68.4, "APDI": 85.2, "FHI": 0.65, "FMA": 31.4, "MW": 4.5}
    assert all(c == 1 for c in ceph.classify(on).values())
    past = {"ANB": 5.71, "SNB": 74.59, "SNA": 83.21, "ODI": 68.39, "APDI": 85.21, "FHI": 0.649, "FMA": 31.41, "MW": 4.51}
    assert ceph.classify(past) == {"ANB": 2, "SNB": 2, "SNA": 2, "ODI": 3, "APDI": 3, "FHI": 3, "FMA": 2, "MW": 4}


def odi_face(ab_mp: float, pp: float) -> np.ndarray:
    p = face(pp=pp)
    p[B] = (80.0, 70.0)
    p = set_direction(p, B, A, -80.0)  # B -> A: up and forward
    p[ME] = (90.0, 110.0)
    return set_direction(p, ME, GO, -80.0 - ab_mp)  # Me -> Go at ab_mp degrees from B -> A


@pytest.mark.parametrize("ab_mp, pp, expected, cls", [(72, 3, 75, 1), (72, -3, 69, 1), (60, 3, 63, 3), (80, 3, 83, 2)])
def test_odi_adds_the_signed_palatal_plane_angle(ab_mp, pp, expected, cls):
    v = ceph.analyse(odi_face(ab_mp, pp))["ODI"]
    assert v["value"] == pytest.approx(expected) and v["class"] == cls


@pytest.mark.parametrize("facial, ab_dir, pp, expected, cls", [
    (93, 100, 3, 87 - 7 + 3, 1),    # B behind A (along the facial plane): the AB angle subtracts
    (93, 86, 3, 87 + 7 + 3, 3),     # B ahead of A: it adds -> class III tendency
    (93, 110, -3, 87 - 17 - 3, 2),  # strongly retruded B, palatal plane tipped up -> class II tendency
])
def test_apdi_sums_facial_ab_and_palatal_angles_with_their_signs(facial, ab_dir, pp, expected, cls):
    p = face(facial=facial, pp=pp)
    p = set_direction(p, A, B, ab_dir)
    v = ceph.analyse(p)["APDI"]
    assert v["value"] == pytest.approx(expected) and v["class"] == cls


@pytest.mark.parametrize("fhi, cls", [(0.7, 1), (0.6, 3), (0.8, 2)])
def test_facial_height_index(fhi, cls):
    v = ceph.analyse(face(fhi=fhi))["FHI"]
    assert v["value"] == pytest.approx(fhi) and v["class"] == cls


@pytest.mark.parametrize("fma, cls", [(30.0, 1), (20.0, 3), (40.0, 2)])
def test_fma_is_sn_to_go_gn(fma, cls):
    v = ceph.analyse(face(fma=fma))["FMA"]
    assert v["value"] == pytest.approx(fma) and v["class"] == cls


@pytest.mark.parametrize("mw, cls", [(3.0, 1), (6.0, 4), (0.0, 2), (-2.0, 3), (1.0, 3)])
def test_modified_wits_sign_and_classes(mw, cls):
    v = ceph.analyse(face(mw=mw))["MW"]
    assert v["value"] == pytest.approx(mw) and v["class"] == cls


def test_a_left_facing_profile_measures_like_its_mirror_image():
    p = face(sna=81.0, snb=75.0, pp=4.0, mw=-1.5)
    mirrored = p.copy()
    mirrored[:, 0] = 500.0 - mirrored[:, 0]
    a, b = ceph.measure(p), ceph.measure(mirrored)
    for name in ceph.NAMES:
        assert float(b[name]) == pytest.approx(float(a[name])), name


def test_batched_measurement_equals_one_by_one():
    faces = np.stack([face(), face(sna=85, snb=73), face(fma=40, mw=6)])
    batch = ceph.measure(faces)
    for i, f in enumerate(faces):
        single = ceph.measure(f)
        for name in ceph.NAMES:
            assert batch[name][i] == pytest.approx(float(single[name]))


def test_compare_reports_accuracy_and_mae_per_measurement():
    true = np.stack([face(), face(sna=85, snb=73)])
    pred = true.copy()
    pred[0] = face(sna=82.0, snb=80.0)  # SNB 78 -> 80 flips SNB (prognathic) and ANB (2 -> class III) on image 0
    summary, frame = ceph.compare(pred, true, ["a", "b"])
    rows = {r["measurement"]: r for r in summary["per_measurement"]}
    assert rows["SNB"]["accuracy"] == 50.0 and rows["SNB"]["mae"] == pytest.approx(1.0)
    assert rows["ANB"]["accuracy"] == 50.0 and rows["SNA"]["accuracy"] == 100.0 and rows["SNA"]["mae"] == pytest.approx(0.0)
    assert list(frame["image_id"]) == ["a", "b"] and frame.loc[0, "SNB_class_pred"] == 3
    assert summary["n_images"] == 2


def test_wrong_landmark_count_is_refused():
    with pytest.raises(ValueError, match="19 ISBI 2015 landmarks"):
        ceph.measure(np.zeros((5, 2)))
