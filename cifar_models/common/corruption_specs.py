"""The corruptions' names, titles, severity parameters and descriptions: everything about them but the
pixels (`eval/corruptions.py` applies them). No torch: the dashboard's web process builds the Robustness
lab's sliders and the corruption curves' titles from here. `NAMES` is the one list, in the order the lab
shows them and `apply_corruptions` composes them (geometry, then optics, light, sensor noise, and
compression last, as in a camera)."""
from __future__ import annotations

SEVERITIES = (1, 2, 3, 4, 5)

PARAMS: dict[str, tuple] = {
    "rotation": (10, 20, 30, 40, 50),
    "occlusion": (0.2, 0.3, 0.4, 0.5, 0.6),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "darkness": (0.8, 0.65, 0.5, 0.35, 0.2),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "jpeg": (80, 65, 58, 50, 40),
}

TITLES: dict[str, str] = {
    "rotation": "Rotation",
    "occlusion": "Occlusion",
    "gaussian_blur": "Gaussian blur",
    "pixelate": "Pixelation",
    "brightness": "Brightness (lighter)",
    "darkness": "Darkness",
    "contrast": "Low contrast",
    "gaussian_noise": "Gaussian noise",
    "jpeg": "JPEG compression",
}

UNITS: dict[str, str] = {
    "rotation": "±{}°", "occlusion": "square {:.0%} of side", "gaussian_blur": "σ {} px",
    "pixelate": "{:.0%} resolution", "brightness": "value +{}", "darkness": "× {}", "contrast": "contrast × {}",
    "gaussian_noise": "σ {}", "jpeg": "quality {}",
}


def scale(name: str) -> str:
    """'severity 1 → 5: σ 0.4 px … σ 1.0 px' (for a control's help text)."""
    first, last = (UNITS[name].format(PARAMS[name][i]) for i in (0, -1))
    return f"severity 1 → 5: {first} … {last}"


def describe(name: str, severity: int) -> str:
    """'Gaussian blur, severity 3 (σ 0.7 px)'."""
    return f"{TITLES[name]}, severity {severity} ({UNITS[name].format(PARAMS[name][severity - 1])})"


NAMES: tuple[str, ...] = tuple(PARAMS)
assert set(PARAMS) == set(TITLES) == set(UNITS)
