"""Published numbers to compare against: the one place they are written down.

Source: the papers' own tables (AFLW2000-3D, 68 points, original
annotations; NME in percent by absolute yaw bin, and head-pose MAE in degrees):
3DDFA (PAMI), PRNet, 2DASL (IEEE TMM
2020), 3DDFA_V2 (ECCV 2020, MobileNet, M+R+S) and SynergyNet.
"""
from __future__ import annotations

# NME % on AFLW2000-3D: [0, 30], [30, 60], [60, 90] yaw bins and their mean.
AFLW2000_NME = {
    '3DDFA (PAMI)': (2.84, 3.57, 4.96, 3.79),
    'PRNet': (2.75, 3.51, 4.61, 3.62),
    '2DASL (paper)': (2.75, 3.46, 4.45, 3.55),
    '3DDFA_V2 (MobileNet, M+R+S)': (2.63, 3.42, 4.48, 3.51),
    'SynergyNet': (2.65, 3.30, 4.27, 3.41),
}

# Measured in this project: 3DDFA_V2's released
# MobileNet x0.5 on the same 2,000 crops, original ground truth, v2 convention.
MB05_MEASURED = {'bins': (2.925, 3.667, 4.784), 'mean_of_bins': 3.792, 'mean': 3.350,
                 'mean_of_bins_reannotated': 3.022}

# Head-pose MAE on AFLW2000-3D, degrees: yaw, pitch, roll, mean.
AFLW2000_POSE_MAE = {
    '2DASL': (3.85, 5.06, 3.50, 4.13),
    '3DDFA_V2': (4.06, 5.26, 3.48, 4.27),
    'SynergyNet': (3.42, 4.09, 2.55, 3.35),
}

YAW_BINS = ('[0,30]', '[30,60]', '[60,90]')
