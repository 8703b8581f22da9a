"""``pip install percept`` alone is enough for the drop-in, evaluate, rate and predicting from embeddings; every
command that needs more stops with one line naming the extra to install.

A core-only install is stood in for by a ``sitecustomize`` hook that makes every package outside the core's
dependency tree unimportable (the tree is read from pyproject.toml and the installed metadata, as the lock file
is); the commands run in subprocesses under it on the reference survey.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from brute_force import estimate
from packaging.utils import canonicalize_name
from PIL import Image

from percept.categories import CATEGORIES
from percept.cli.main import SUBCOMMANDS

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference"
BIN = Path(sys.executable).parent
MODEL = "open_clip:ViT-B-32"  # the reference survey's embeddings were made with it
DROPIN_LINE = re.compile(r"category = (\w+); k = (\d+); mse = ([-\d.]+); r2  = ([-\d.]+)")


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def optional_imports() -> set[str]:
    """Top-level import names provided only by packages outside the core's dependency tree."""
    lock = load_tool("lock_requirements")
    project = pyproject()
    core = set(lock.dependency_platforms(lock.project_requirements(project, ())))
    everything = set(lock.dependency_platforms(lock.project_requirements(project, ("all", "test"))))
    optional = everything - core
    return {name for name, dists in metadata.packages_distributions().items()
            if all(canonicalize_name(dist) in optional for dist in dists)}


@pytest.fixture(scope="module")
def blocker(tmp_path_factory) -> Path:
    """A folder whose ``sitecustomize`` makes the optional packages unimportable."""
    folder = tmp_path_factory.mktemp("core-only")
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""\
        import sys

        BLOCKED = {sorted(optional_imports())!r}


        class CoreOnly:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None


        sys.meta_path.insert(0, CoreOnly())
        """))
    return folder


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> Path:
    """The reference survey with a model exported from it, its ratings of every image and two photos."""
    folder = tmp_path_factory.mktemp("lean") / "survey"
    shutil.copytree(REFERENCE / "survey", folder)
    for args in ([str(BIN / "clip_retrieval_knn"), "-g", "data.geojson", "-e", "embeddings", "-M", MODEL, "-k", "10",
                  "--export", "model.npz"],
                 [str(BIN / "percept"), "rate", "--model", "model.npz", "-e", "embeddings", "--locations",
                  "data.geojson", "--out", "rated.csv", "-q"]):
        subprocess.run(args, cwd=folder, check=True, capture_output=True, timeout=600)
    (folder / "photos").mkdir()
    for i in range(2):
        Image.new("RGB", (48, 32), (40 * i, 120, 200)).save(folder / "photos" / f"photo_{i}.png")
    return folder


def core_only(args: list[str], cwd: Path, blocker: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


def test_the_stand_in_blocks_every_optional_package_and_nothing_of_the_core(blocker, tmp_path):
    blocked = set(ast.literal_eval(re.search(r"BLOCKED = (\[.*\])", (blocker / "sitecustomize.py").read_text())[1]))
    assert {"matplotlib", "h3", "torch", "torchvision", "open_clip", "transformers", "fastapi", "uvicorn",
            "python_multipart", "httpx", "psycopg", "mapbox_vector_tile", "pyrosm", "osmnx", "geopandas", "shapely",
            "ray", "sklearn"} <= blocked
    core = {"numpy", "pandas", "pyarrow", "scipy", "msgspec", "orjson", "cramjam", "isal", "threadpoolctl", "tqdm",
            "PIL", "pyproj"}
    assert not core & blocked
    probe = "import importlib, sys\nfor n in sys.argv[1:]:\n    try: importlib.import_module(n); print(n, 'ok')\n" \
            "    except ImportError: print(n, 'blocked')\n"
    shown = core_only([sys.executable, "-c", probe, "torch", "matplotlib", "sklearn", *sorted(core)], tmp_path,
                      blocker).stdout.split("\n")
    assert {"torch blocked", "matplotlib blocked", "sklearn blocked"} | {f"{n} ok" for n in core} <= set(shown)


def test_every_command_line_module_loads(blocker, tmp_path):
    """``percept --help`` imports every subcommand's module."""
    shown = {}
    for program in ("percept", "clip_retrieval_knn"):
        result = core_only([str(BIN / program), "--help"], tmp_path, blocker)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        shown[program] = result.stdout
    assert [n for n in SUBCOMMANDS if n.replace("_", "-") not in shown["percept"]] == []
    assert "--clip-model" in shown["clip_retrieval_knn"]


def test_no_library_module_imports_scikit_learn():
    offenders = []
    for path in (ROOT / "percept").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.partition(".")[0] == "sklearn"]
    assert not offenders
    core = " ".join(pyproject()["project"]["dependencies"])
    assert "scikit-learn" not in core and any(r.startswith("scikit-learn") for r in pyproject()["project"]
                                              ["optional-dependencies"]["test"])


def test_the_dropin_gives_the_original_numbers(survey, blocker):
    result = core_only([str(BIN / "clip_retrieval_knn"), "-g", "data.geojson", "-e", "embeddings", "-M", MODEL,
                        "-k", "5,10,20"], survey, blocker)
    assert result.returncode == 0, result.stderr
    expected = json.loads((REFERENCE / "expected" / "plain.json").read_text())["lines"]
    got = [list(m.groups()) for m in DROPIN_LINE.finditer(result.stdout)]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    np.testing.assert_allclose([[float(v) for v in g[2:]] for g in got], [[float(v) for v in e[2:]] for e in expected],
                               rtol=1e-6)


def test_evaluate_and_rate_give_what_the_full_install_gives(survey, blocker, tmp_path):
    evaluate = [str(BIN / "percept"), "evaluate", "-g", "data.geojson", "-e", "embeddings", "-M", MODEL, "-k", "10",
                "--group-by", "block:300", "--cv", "3"]
    full = subprocess.run(evaluate, cwd=survey, capture_output=True, text=True, timeout=600, check=False)
    lean = core_only(evaluate, survey, blocker)
    assert lean.returncode == 0 and full.returncode == 0, lean.stderr
    assert lean.stdout == full.stdout and "MSE" in lean.stdout
    rate = [str(BIN / "percept"), "rate", "--model", "model.npz", "-e", "embeddings", "--locations", "data.geojson",
            "-q", "--out"]
    for suffix in (".csv", ".geoparquet"):
        result = core_only([*rate, str(tmp_path / f"rated{suffix}")], survey, blocker)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "rated.csv").read_bytes() == (survey / "rated.csv").read_bytes()
    geoparquet = pd.read_parquet(tmp_path / "rated.geoparquet")
    full_csv = pd.read_csv(survey / "rated.csv")
    for column in ("image", "lon", "lat", *CATEGORIES):
        assert geoparquet[column].tolist() == full_csv[column].tolist(), column


def test_predicting_from_embeddings_matches_a_brute_force(survey, blocker, tmp_path):
    script = textwrap.dedent(f"""\
        import json, sys
        import numpy as np
        from percept import api

        data = api.load_survey("data.geojson", "embeddings", clip_model={MODEL!r})
        vectors = np.asarray(data.vectors[np.arange(len(data.names))], dtype=np.float64)
        queries = vectors[::57]
        model = api.fit(data, "walkability", k=10)
        np.savez({str(tmp_path / "run.npz")!r}, vectors=vectors, queries=queries,
                 rows=data.samples["walkability"].rows, scores=data.samples["walkability"].scores,
                 predicted=api.predict(model, queries))
        """)
    result = core_only([sys.executable, "-c", script], survey, blocker)
    assert result.returncode == 0, result.stderr
    run = np.load(tmp_path / "run.npz")
    expected = [estimate(run["vectors"][run["rows"]], run["scores"], query, 10, "softmax10**")[0]
                for query in run["queries"].astype(np.float64)]
    np.testing.assert_allclose(run["predicted"], expected, rtol=1e-9)


MISSING_EXTRA = {
    "map": ("maps", ["percept", "map", "--rated", "rated.csv", "--category", "walkability", "--out", "map.png"]),
    "report": ("maps", ["percept", "evaluate", "-g", "data.geojson", "-e", "embeddings", "-M", MODEL, "-k", "10",
                        "--report", "report"]),
    "h3": ("maps", ["python", "-c", "from percept.study.h3grid import _h3; _h3()"]),
    "encode": ("clip", ["clip_retrieval_knn", "-g", "data.geojson", "-i", "photos", "-e", "new", "-M",
                        "percept:tiny", "--encoder", "builtin", "-k", "5"]),
    "predict": ("clip", ["percept", "predict", "--model", "model.npz", "photos/photo_0.png"]),
    "serve": ("web", ["percept", "serve", "--model", "model.npz", "--port", "0"]),
    "ray": ("ray", ["percept", "rate", "--model", "model.npz", "-e", "embeddings", "--out", "ray.csv", "--engine",
                    "ray"]),
    "survey": ("db", ["percept", "survey", "export", "--db", "postgresql://reader@localhost/percept", "-o", "out"]),
    "environment": ("osm", ["percept", "environment", "-g", "data.geojson", "--osm", "city.osm.pbf", "-o", "env.csv"]),
    "fetch": ("city", ["percept", "fetch-images", "-g", "data.geojson", "-o", "fetched"]),
}


@pytest.mark.parametrize("case", MISSING_EXTRA)
def test_a_missing_extra_is_one_line_naming_it(survey, blocker, case):
    extra, (program, *args) = MISSING_EXTRA[case]
    before = set(os.listdir(survey))
    result = core_only([sys.executable if program == "python" else str(BIN / program), *args], survey, blocker)
    if program == "python":  # a library call: the PerceptError's own line
        assert result.returncode != 0 and result.stderr.strip().splitlines()[-1].startswith("percept.errors.")
        message = result.stderr.strip().splitlines()[-1]
    else:
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
        message = result.stderr
    assert f"pip install 'percept[{extra}]'" in message and "not installed" in message
    assert set(os.listdir(survey)) == before


def strings(node: ast.expr) -> list[str]:
    """The strings an expression can give: a constant, either branch of ``a if c else b``, a tuple's items."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return strings(node.body) + strings(node.orelse)
    if isinstance(node, ast.Tuple):
        return [text for element in node.elts for text in strings(element)]
    raise AssertionError(f"cannot tell which strings line {node.lineno} gives")


def require_calls(tree: ast.AST) -> list[tuple[str, str]]:
    """(extra, module) of each ``require(extra, module, …)`` call; a module named by the variable of a
    ``for`` loop counts once for each string the loop gives it."""
    looped = {node.target.id: node.iter for node in ast.walk(tree)
              if isinstance(node, ast.For) and isinstance(node.target, ast.Name)}
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
            extra, module = node.args[:2]
            modules = strings(looped[module.id] if isinstance(module, ast.Name) else module)
            calls += [(extra.value, name) for name in modules]
    return calls


def test_each_extra_named_installs_the_package_it_is_named_for():
    """Every ``require(extra, module, …)`` in the package names an extra that exists and brings that module."""
    lock = load_tool("lock_requirements")
    project = pyproject()
    extras = project["project"]["optional-dependencies"]
    providers = metadata.packages_distributions()
    calls = [(path.name, *call) for path in (ROOT / "percept").rglob("*.py")
             for call in require_calls(ast.parse(path.read_text()))]
    assert {extra for _, extra, _ in calls} == {"maps", "clip", "web", "db", "city", "osm", "ray"}
    for where, extra, module in calls:
        assert extra in extras, (where, extra)
        tree = set(lock.dependency_platforms(lock.project_requirements(project, (extra,))))
        dists = {canonicalize_name(d) for d in providers[module.partition(".")[0]]}
        assert dists & tree, (where, extra, module)
    assert set(extras["all"][0].partition("[")[2].rstrip("]").split(",")) == set(extras) - {"all", "test", "encode"}
    assert extras["encode"] == ["percept[clip]"]
