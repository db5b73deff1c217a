"""The synthetic cephalogram's picture: anatomy drawn from the 19 landmarks, rendered as an X-ray.

Why a module of its own: `synthetic` decides what a case is (shape, pose, doctors) and writes the files;
this one only turns landmarks into pixels. Each landmark is a corner, tip, centre or extremal point of a drawn
structure, so it can be found in the image. Geometry is in canonical units (0.1 mm, the challenge's
1935x2400 frame) placed by local affine frames (mean shape -> this case) for cranium, maxilla and
mandible, then mapped to the image by one similarity; drawing is sub-pixel cv2 into attenuation layers.
"""

from __future__ import annotations

import cv2
import numpy as np

from landmark_exp.data.drawing import Canvas, affine, ellipse_points, molar, rot, smooth_noise, spline, tooth

CANON_SIZE = np.array([1935.0, 2400.0])  # the challenge frame (width, height), 0.1 mm per unit
CANON_MM = 0.1

# Our own 19-point mean shape, normalised (x / 1935, y / 2400), order of ISBI2015_LANDMARKS.
MEAN_SHAPE = CANON_SIZE * np.array([
    [0.419, 0.435],  # 1 sella: centre of the sella turcica
    [0.718, 0.406],  # 2 nasion: deepest point of the frontonasal concavity
    [0.656, 0.513],  # 3 orbitale: lowest point of the orbital rim
    [0.313, 0.510],  # 4 porion: top of the ear canal (ear-rod ring)
    [0.719, 0.640],  # 5 subspinale (A point): deepest point of the anterior maxilla
    [0.686, 0.783],  # 6 supramentale (B point): deepest point of the concavity infradentale-pogonion
    [0.697, 0.829],  # 7 pogonion: most anterior point of the bony chin, in front of B point
    [0.668, 0.854],  # 8 menton: lowest point of the symphysis
    [0.689, 0.846],  # 9 gnathion: between pogonion and menton on the chin contour
    [0.380, 0.725],  # 10 gonion: the mandibular angle
    [0.734, 0.708],  # 11 lower incisor tip
    [0.744, 0.713],  # 12 upper incisor tip
    [0.806, 0.678],  # 13 upper lip: most anterior point
    [0.794, 0.755],  # 14 lower lip: most anterior point
    [0.775, 0.626],  # 15 subnasale: columella / upper-lip junction
    [0.752, 0.855],  # 16 soft-tissue pogonion: most prominent point of the soft chin
    [0.501, 0.597],  # 17 posterior nasal spine: back tip of the palate
    [0.724, 0.604],  # 18 anterior nasal spine: front tip of the palate
    [0.347, 0.552],  # 19 articulare: ramus back border meets the cranial base
])
S, N, OR, PO, A, B, POG, ME, GN, GO, LI, UI, UL, LL, SN, SP, PNS, ANS, AR = range(19)
# The lower incisor's root apex from B point (mandible frame): the root sits in the symphysis, its apex 5 mm
# behind B, so it neither covers the cortex where B is nor ends there (B would look like the tooth's far end).
LI_APEX = np.array([-50.0, -15.0])

def fit_scale(width: int, height: int) -> float:
    """Image pixels per canonical unit: the challenge frame fitted into the image (0.2 at 387x480)."""
    return float(min(width / CANON_SIZE[0], height / CANON_SIZE[1]))


def draw(L: np.ndarray, aux: dict, view: tuple, width: int, height: int, rng: np.random.Generator):
    """The 8-bit image of landmarks `L` (canonical units) seen through `view` (canonical -> image matrix,
    offset, pixels per unit), and the soft chin's contour direction there (soft pogonion's ambiguous axis)."""
    cv = Canvas(width, height, *view)
    M0 = MEAN_SHAPE
    cran, maxi, mand = (affine(M0[i], L[i]) for i in ([S, N, PO], [PNS, ANS, OR], [AR, GO, ME]))

    def mp(frame, pts):  # mean-shape coordinates -> this case, through a local frame
        return np.asarray(pts, float) @ frame[0].T + frame[1]

    def off(frame, base, d):  # `base` plus an offset turned and scaled with the frame
        return np.asarray(base, float) + np.asarray(d, float) @ frame[0].T

    def incisor(tip, apex, crown_w):  # outline (whole, crown), unit axis tip -> apex, labial (anterior) normal
        d = (apex - tip) / np.linalg.norm(apex - tip)
        lab = np.array([d[1], -d[0]])
        return tooth(tip, apex, crown_w), d, -lab if lab[0] < 0 else lab

    # Cranial vault: ellipse arc from glabella over the top to the occiput, closed along the cranial base.
    vs = aux["vault"]
    glab = off(cran, L[N], [45.0, -120.0])
    arc = mp(cran, ellipse_points([720.0, 770.0], [735.0 * vs, 705.0 * vs], 0.0, 7.0, -210.0, 64))
    front_base = np.vstack([mp(cran, [[850.0, 1200.0], [1000.0, 1175.0], [1150.0, 1090.0], [1280.0, 1055.0]]),
                            off(cran, L[N], [-55.0, 45.0])])  # anterior cranial base up to nasion
    base = spline([arc[-1], mp(cran, [120.0, 1340.0]), mp(cran, [300.0, 1470.0]),
                    off(cran, L[AR], [-55.0, 95.0]), L[AR], *front_base, L[N], glab], samples=6)  # basion, articulare
    cv.fill(np.vstack([arc, base[1:]]), 0.75)
    cv.line(arc, 70.0, 0.45)
    cv.line(mp(cran, ellipse_points([720.0, 770.0], [665.0 * vs, 640.0 * vs], 0.0, 0.0, -200.0, 48)), 22.0, 0.2)
    cv.ellipse(off(cran, L[N], [-50.0, -150.0]), (45.0, 75.0), -0.35, angle=-15.0)  # frontal sinus
    cv.ellipse(off(cran, L[PO], [120.0, -70.0]), (190.0, 70.0), 0.45, angle=-25.0)  # petrous
    cv.ellipse(off(cran, L[PO], [-40.0, 170.0]), (90.0, 120.0), 0.3, angle=10.0)  # mastoid
    cv.line(np.vstack([off(cran, L[S], [90.0, -45.0]), mp(cran, [[1150.0, 1010.0]]),
                       off(cran, L[N], [-60.0, 20.0])]), 22.0, 0.45)  # planum
    # Sella: sphenoid body, dark fossa centred on sella with a bright floor, dorsum and clinoid.
    cv.ellipse(off(cran, L[S], [55.0, 75.0]), (185.0, 150.0), 0.5, angle=-10.0)
    cv.ellipse(L[S], (62.0, 58.0), -0.75)
    cv.line(ellipse_points(L[S], (70.0, 66.0), 0.0, -10.0, 190.0, 24), 20.0, 0.65)
    cv.fill(np.vstack([off(cran, L[S], d) for d in ([-80.0, 40.0], [-70.0, -75.0], [-40.0, -80.0])]), 0.6)
    cv.fill(np.vstack([off(cran, L[S], d) for d in ([95.0, -20.0], [30.0, -62.0], [110.0, -60.0])]), 0.55)
    # Midface from nasion over the nasal bone, ANS, A point and the upper incisor's alveolus to PNS.
    nasal_tip = off(cran, L[N], [80.0, 175.0])
    ui_apex = L[UI] + (rot(aux["ui_tilt"]) @ (maxi[0] @ np.array([-95.0, -215.0])))
    ui, ud, ulab = incisor(L[UI], ui_apex, 72.0)
    prosthion = L[UI] + ud * 100.0 + ulab * 34.0
    pir = mp(maxi, [1240.0, 1330.0])
    cv.fill(np.vstack([
        L[N], spline([nasal_tip, pir, off(maxi, L[ANS], [-60.0, -25.0]), L[ANS]], samples=6)[:-1], L[ANS],
        off(maxi, L[ANS], [-45.0, 25.0]), spline([off(maxi, L[ANS], [-25.0, 30.0]), L[A], prosthion], samples=6)[1:-1],
        prosthion, L[UI] + ud * 95.0 - ulab * 40.0, mp(maxi, [[1250.0, 1660.0], [1130.0, 1650.0], [1030.0, 1630.0]]),
        off(maxi, L[PNS], [40.0, 60.0]), L[PNS], off(maxi, L[PNS], [-40.0, -120.0]), front_base]), 0.45)
    # Sinus, orbit (lowest rim point is orbitale), pterygomaxillary fissure, zygoma, nasal bone, palate.
    cv.ellipse(mp(maxi, [1180.0, 1360.0]), (150.0, 105.0), -0.3, angle=10.0)
    orbit, ptm = off(cran, L[OR], [0.0, -150.0]), off(maxi, L[PNS], [0.0, -150.0])
    cv.ellipse(orbit, (112.0, 150.0), -0.2)
    cv.ellipse(orbit, (112.0, 150.0), 0.55, ring=22.0)
    cv.ellipse(ptm, (28.0, 120.0), -0.35)
    cv.ellipse(ptm, (34.0, 126.0), 0.35, ring=12.0)
    cv.line(mp(maxi, [[1160.0, 1290.0], [1120.0, 1420.0], [1110.0, 1520.0]]), 30.0, 0.35)
    cv.fill(np.vstack([L[N], off(cran, L[N], [25.0, 10.0]), nasal_tip, off(cran, L[N], [-10.0, 40.0])]), 0.55)
    cv.fill(np.vstack([L[PNS], off(maxi, L[PNS], [120.0, -12.0]), L[ANS], off(maxi, L[ANS], [-70.0, 38.0]),
                       off(maxi, (L[PNS] + L[ANS]) / 2, [0.0, 65.0]), off(maxi, L[PNS], [40.0, 35.0])]), 0.6)
    cv.line(spline([L[ANS], off(maxi, L[ANS], [-45.0, 25.0]), L[A], prosthion], samples=8), 18.0, 0.4)
    # Ear rod: bright metal ring around a dark canal whose top is porion.
    ear = off(cran, L[PO], [0.0, 45.0])
    cv.ellipse(ear, (58.0, 45.0), -0.55)
    cv.ellipse(ear, (85.0, 85.0), 0.9, ring=16.0)
    # Mandible: one closed contour through articulare, gonion, menton, gnathion, pogonion and B point.
    li_apex = L[B] + (rot(aux["li_tilt"]) @ (mand[0] @ LI_APEX))
    li, ld, llab = incisor(L[LI], li_apex, 62.0)
    infradentale, lingual = L[LI] + ld * 88.0 + llab * 30.0, L[LI] + ld * 90.0 - llab * 40.0
    ramus = mp(mand, [[703.0, 1535.0], [662.0, 1272.0]])
    antegonial, chin_under = mp(mand, [900.0, 1826.0]), mp(mand, [1180.0, 2003.0])
    cv.fill(spline([*mp(mand, [[705.0, 1222.0], [752.0, 1262.0], [835.0, 1365.0], [915.0, 1325.0],  # condyle,
                                [938.0, 1450.0], [975.0, 1590.0], [1030.0, 1680.0], [1170.0, 1705.0]]),  # coronoid
                     lingual, infradentale, L[B], L[POG], L[GN], L[ME], chin_under, antegonial, L[GO], ramus[0],
                     L[AR], ramus[1]], closed=True, samples=8), 0.6)
    cv.ellipse(mp(mand, [700.0, 1262.0]), (50.0, 40.0), 0.3, angle=30.0)
    lower_border = spline([L[GO], antegonial, chin_under, L[ME], L[GN], L[POG], L[B]], samples=8)
    cv.line(lower_border, 34.0, 0.55)
    cv.line(spline([L[POG], L[B], infradentale], samples=8)[8:], 16.0, 0.45)  # thin alveolar cortex, B up to Id
    cv.line(spline([ramus[1], L[AR], ramus[0], L[GO]]), 22.0, 0.35)
    cv.line(spline([lingual, off(mand, lingual, [-20.0, 120.0]), off(mand, L[ME], [-110.0, -55.0]), L[ME]],
                    samples=8), 20.0, 0.35)
    # Bilateral mandible: the far side projects slightly larger and shifted (double lower border).
    gh = aux["ghost"]
    shift = np.array([-18.0 + 8.0 * gh[1], 14.0 + 6.0 * gh[2]]) @ cran[0].T
    cv.line((lower_border[:-10] - L[GO]) * (1.03 + 0.01 * gh[0]) + L[GO] + shift, 18.0, 0.22)
    # Teeth: posterior teeth along the occlusal line first, then the incisors (enamel crowns) on top.
    contact = (L[UI] + L[LI]) / 2
    for p0, p1, sign in ((contact - ulab * 80.0 - ud * 6.0, mp(maxi, [1040.0, 1668.0]), -1.0),
                         (contact - llab * 75.0 - ld * 6.0, mp(mand, [1040.0, 1652.0]), 1.0)):
        length = np.linalg.norm(p1 - p0)
        along = (p1 - p0) / length
        root_dir = np.array([-along[1], along[0]])
        root_dir = -root_dir if np.sign(root_dir[1]) != sign else root_dir
        widths = np.array([0.8, 0.85, 0.85, 1.15, 1.2])
        edges = np.concatenate([[0.0], np.cumsum(widths)]) / widths.sum() * length
        for i in range(len(widths)):
            mid = p0 + along * (edges[i] + edges[i + 1]) / 2
            crown, root = molar(mid, along, root_dir, (edges[i + 1] - edges[i]) * 0.95, 70.0, 120.0)
            cv.fill(root, 0.55)
            cv.fill(crown, 0.95)
    for whole, crown in (ui, li):
        cv.fill(whole, 0.8)
        cv.fill(crown, 0.55)
    # Cervical spine (rounded boxes with a bright cortex) behind the ramus, hyoid below the mandible.
    along, down = np.array([0.993, -0.12]), np.array([0.12, 0.993])
    for i in range(5):
        body, _ = molar(off(cran, L[AR], [-150.0 - 20.0 * i, 300.0 + 230.0 * i]), along, down, 170.0,
                         190.0 if i == 0 else 150.0, 0.0)
        cv.fill(body, 0.5)
        cv.line(body, 16.0, 0.3, closed=True)
    cv.ellipse(off(mand, L[ME], [-380.0, 200.0]), (55.0, 22.0), 0.45, angle=-15.0)
    if rng.random() < 0.5:  # nasion relator rod of the cephalostat, sometimes in view
        x = L[N][0] + rng.uniform(250.0, 380.0)
        cv.fill([[x, -100.0], [x + 45.0, -100.0], [x + 45.0, L[N][1] - 120.0], [x, L[N][1] - 120.0]], 0.9)
    # Soft tissue: forehead, nose, lips, chin and neck through subnasale, both lips and soft pogonion.
    nose, sn = aux["nose"], L[SN]
    chin_above, chin_below = off(mand, L[SP], [-5.0, -80.0]), off(mand, L[ME], [25.0, 90.0])
    face = spline([
        off(cran, glab, [65.0, 0.0]), off(cran, L[N], [62.0, 15.0]), off(maxi, sn, [80.0 * nose, -190.0 * nose]),
        off(maxi, sn, [150.0 * nose, -115.0 * nose]), off(maxi, sn, [125.0 * nose, -45.0 * nose]),  # pronasale
        off(maxi, sn, [55.0, -18.0]), L[SN], off(maxi, L[SN], [18.0, 55.0]), L[UL], off(maxi, L[UL], [-20.0, 60.0]),
        (L[UL] + L[LL]) / 2 + np.array([-55.0, 0.0]) @ maxi[0].T,  # stomion
        off(mand, L[LL], [-20.0, -50.0]), L[LL], off(mand, L[LL], [-40.0, 55.0]),
        off(mand, L[B], [75.0, 50.0]), chin_above, L[SP], chin_below,  # labiomental fold .. soft menton
        off(mand, L[ME], [-150.0, 140.0]), *(off(mand, L[GO], d) for d in ([320.0, 380.0], [290.0, 600.0],
                                                                          [260.0, 1200.0]))], samples=8)
    scalp = mp(cran, ellipse_points([720.0, 770.0], [790.0 * vs, 760.0 * vs], 0.0, 180.0, 365.0, 48))
    far = 4000.0
    cv.fill(np.vstack([scalp, face, [[face[-1][0], far], [-far, far], [-far, scalp[0][1]]]]), 1.0, "soft")
    cv.fill(np.vstack([off(maxi, L[PNS], [-50.0, 20.0]), off(maxi, L[PNS], [-20.0, 250.0]),  # airway
                       *(off(mand, L[GO], d) for d in ([230.0, 250.0], [170.0, 900.0], [100.0, 900.0], [140.0, 250.0])),
                       off(maxi, L[PNS], [-110.0, 220.0]), off(maxi, L[PNS], [-130.0, 20.0])]), -0.45, "soft")
    above, below = cv.to_px(chin_above)[0], cv.to_px(chin_below)[0]
    return _film(cv, rng), (below - above) / max(np.linalg.norm(below - above), 1e-6)


def _film(cv: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Attenuation -> 8-bit X-ray: soft tissue thicker away from the profile, bone texture, blur, film
    response, exposure, vignetting and grain."""
    w, h = cv.w, cv.h
    soft = cv.layers["soft"]
    dist = cv2.distanceTransform((soft > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    thickness = np.minimum(1.0, 0.45 + dist / max(4.0, 60.0 * cv.ppu)).astype(np.float32)
    soft_att = np.clip(soft, 0.0, 1.0) * thickness * np.float32(0.34)
    texture = 1.0 + 0.10 * smooth_noise(rng, w, h, 6) + 0.05 * smooth_noise(rng, w, h, 2)
    att = soft_att + np.clip(cv.layers["bone"], 0.0, None) * texture
    att = cv2.GaussianBlur(att, (0, 0), max(0.5, 4.0 * cv.ppu) * rng.uniform(0.8, 1.3))
    gain, bg = rng.uniform(0.8, 1.0), rng.uniform(12.0, 30.0)
    img = bg + (250.0 - bg) * (1.0 - np.exp(-gain * att))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w * rng.uniform(0.4, 0.6)) / w) ** 2 + ((yy - h * rng.uniform(0.4, 0.6)) / h) ** 2
    img *= (1.0 - rng.uniform(0.25, 0.45) * r2) * (1.0 + 0.04 * smooth_noise(rng, w, h, 40))
    img += rng.uniform(2.5, 4.5) * rng.standard_normal((h, w), dtype=np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 0.5)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
