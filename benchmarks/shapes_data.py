"""Generated scenes and questions for the trained shapes VLM (benchmarks/shapes_vlm.py).

A scene is a 64×64 RGB image: a noisy grey background, one to three shapes of distinct kinds (circle,
square, triangle), each with a colour and a size, and at most one small white mark (dot, plus or cross,
5×5 px: the three have the same number of pixels, so only their layout tells them apart — the detail that
coarse pooling washes out). Every question has a one-word answer; its type needs colour, position,
counting, size or the small detail.

Everything is a pure function of a seed: `scenes(seed, split, n)` draws from numpy's PCG64 seeded with
(seed, split), so the train split (0) and the held-out split (1) are independent streams. Pixel values are
integers computed without floating-point reductions, so the images are the same on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64
KINDS = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 190, 60), "blue": (50, 80, 230),
           "yellow": (230, 210, 40), "purple": (160, 60, 200), "cyan": (40, 200, 210)}
MARKS = ("dot", "plus", "cross")
NUMBERS = ("zero", "one", "two", "three")
SIDES = ("left", "right", "top", "bottom")
RADIUS = {"small": 5, "big": 9}  # half the side of the shape's box, in px
MARK_SIZE = 5
TRAIN, HELDOUT = 0, 1

# The question types, in the order the held-out set cycles through them; the answer words of each.
QUESTION_TYPES = ("colour", "position", "count", "count_colour", "mark", "size", "side")

_GLYPHS = {
    "dot": np.pad(np.ones((3, 3), bool), 1),
    "plus": np.zeros((5, 5), bool),
    "cross": np.eye(5, dtype=bool) | np.fliplr(np.eye(5, dtype=bool)),
}
_GLYPHS["plus"][2, :] = True
_GLYPHS["plus"][:, 2] = True


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    size: str  # small | big
    cx: int
    cy: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        r = RADIUS[self.size]
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r  # x0, y0, x1, y1 (inclusive)


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    mark: str  # none | dot | plus | cross
    mark_xy: tuple[int, int]  # top-left corner of the 5×5 mark (meaningless when mark is none)
    background: int
    noise_seed: int


@dataclass(frozen=True)
class Question:
    kind: str  # one of QUESTION_TYPES
    text: str
    answer: str


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def draw_scene(rng: np.random.Generator) -> Scene:
    """One random scene; shapes and the mark never touch (2 px apart at least)."""
    n = int(rng.integers(1, 4))
    kinds = rng.permutation(len(KINDS))[:n]
    names = list(COLOURS)
    while True:
        shapes = []
        for k in kinds:
            size = "big" if rng.random() < 0.5 else "small"
            r = RADIUS[size]
            shape = Shape(KINDS[int(k)], names[int(rng.integers(len(names)))], size,
                          int(rng.integers(r + 1, SIZE - r - 1)), int(rng.integers(r + 1, SIZE - r - 1)))
            shapes.append(shape)
        if all(not _overlaps(a.box, b.box, 2) for i, a in enumerate(shapes) for b in shapes[i + 1:]):
            break
    mark = ("none",) + MARKS
    mark = mark[int(rng.integers(4))]
    xy = (0, 0)
    if mark != "none":
        while True:
            x, y = int(rng.integers(1, SIZE - MARK_SIZE - 1)), int(rng.integers(1, SIZE - MARK_SIZE - 1))
            box = (x, y, x + MARK_SIZE - 1, y + MARK_SIZE - 1)
            if all(not _overlaps(box, s.box, 2) for s in shapes):
                xy = (x, y)
                break
    return Scene(tuple(shapes), mark, xy, int(rng.integers(25, 70)), int(rng.integers(2**31)))


def _shape_mask(s: Shape) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    r = RADIUS[s.size]
    dx, dy = xx - s.cx, yy - s.cy
    if s.kind == "circle":
        return dx * dx + dy * dy <= r * r
    if s.kind == "square":
        return (np.abs(dx) <= r - 1) & (np.abs(dy) <= r - 1)
    # triangle, apex up: |dx| grows linearly from the apex (dy = -r) to the base (dy = r); integer test
    return (dy >= -r) & (dy <= r) & (2 * np.abs(dx) <= dy + r)


def render(scene: Scene) -> np.ndarray:
    """The scene as uint8 RGB [SIZE, SIZE, 3]."""
    noise = np.random.default_rng(scene.noise_seed).integers(-8, 9, (SIZE, SIZE, 1))
    img = np.clip(scene.background + noise, 0, 255).repeat(3, axis=2)
    for s in scene.shapes:
        img[_shape_mask(s)] = COLOURS[s.colour]
    if scene.mark != "none":
        x, y = scene.mark_xy
        patch = img[y:y + MARK_SIZE, x:x + MARK_SIZE]
        patch[_GLYPHS[scene.mark]] = 255
    return img.astype(np.uint8)


def _extreme(shapes: tuple[Shape, ...], side: str) -> Shape | None:
    """The shape farthest to `side`, or None when the runner-up is within 8 px (ambiguous)."""
    key = {"left": lambda s: s.cx, "right": lambda s: -s.cx, "top": lambda s: s.cy, "bottom": lambda s: -s.cy}[side]
    order = sorted(shapes, key=key)
    if len(order) < 2 or key(order[1]) - key(order[0]) < 8:
        return None
    return order[0]


def questions(scene: Scene) -> dict[str, list[Question]]:
    """Every question the scene answers unambiguously, by type (a type may have none)."""
    out: dict[str, list[Question]] = {t: [] for t in QUESTION_TYPES}
    for s in scene.shapes:
        out["colour"].append(Question("colour", f"what colour is the {s.kind} ?", s.colour))
        out["size"].append(Question("size", f"is the {s.kind} big or small ?", s.size))
        if abs(s.cx - SIZE // 2) >= 6:
            out["side"].append(Question("side", f"is the {s.kind} on the left or the right ?",
                                        "left" if s.cx < SIZE // 2 else "right"))
    for side in SIDES:
        s = _extreme(scene.shapes, side)
        if s is not None:
            out["position"].append(Question("position", f"which shape is on the {side} ?", s.kind))
    out["count"].append(Question("count", "how many shapes are there ?", NUMBERS[len(scene.shapes)]))
    # The colours present, and one absent colour (which one is fixed by the scene): "zero" stays a minority.
    names = list(COLOURS)
    present = [c for c in names if any(s.colour == c for s in scene.shapes)]
    absent = [c for c in names if c not in present]
    for c in present + [absent[scene.noise_seed % len(absent)]]:
        k = sum(s.colour == c for s in scene.shapes)
        out["count_colour"].append(Question("count_colour", f"how many {c} shapes are there ?", NUMBERS[k]))
    out["mark"].append(Question("mark", "which mark is there ?", scene.mark))
    return out


def words() -> list[str]:
    """Every word a question or an answer uses, sorted (the tokenizer's vocabulary after its specials)."""
    fixed = ("what colour is the which shape on how many shapes are there mark big or small left right "
             "top bottom none ? :").split()
    return sorted(set(fixed) | set(KINDS) | set(COLOURS) | set(MARKS) | set(NUMBERS) | set(SIDES)
                  | set(RADIUS))


def scenes(seed: int, split: int, n: int) -> list[Scene]:
    """`n` scenes of one split; the same (seed, split) gives the same scenes, split 0 and 1 are independent."""
    rng = np.random.default_rng([seed, split])
    return [draw_scene(rng) for _ in range(n)]


def heldout_items(seed: int, n: int) -> list[tuple[Scene, Question]]:
    """`n` held-out (scene, question) pairs, the question types taken in turn (balanced), a question of
    that type drawn from the scene; scenes without one of that type are skipped."""
    rng = np.random.default_rng([seed, HELDOUT, 7])
    stream = np.random.default_rng([seed, HELDOUT])
    out: list[tuple[Scene, Question]] = []
    while len(out) < n:
        kind = QUESTION_TYPES[len(out) % len(QUESTION_TYPES)]
        scene = draw_scene(stream)
        qs = questions(scene)[kind]
        if qs:
            out.append((scene, qs[int(rng.integers(len(qs)))]))
    return out
