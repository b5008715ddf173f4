"""Module paths of lladapt 0.1 that moved into the stage packages still import, each with a
DeprecationWarning naming the new path, and give the very same objects; nothing inside lladapt
uses an old path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from lladapt.common.moved import MOVED_MODULES


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)


def test_every_old_module_path_imports_with_a_warning_naming_the_new_one() -> None:
    done = run_python("""
        import importlib, json, warnings
        from lladapt.common.moved import MOVED_MODULES
        out = {}
        for old in MOVED_MODULES:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            out[old] = {"warnings": [str(w.message) for w in caught
                                     if issubclass(w.category, DeprecationWarning)],
                        "names": sorted(n for n in dir(module) if not n.startswith("__"))}
        print(json.dumps(out))
    """)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    for old, new in MOVED_MODULES.items():
        targets = (new,) if isinstance(new, str) else new
        assert seen[old]["warnings"] == [
            f"{old} moved to {' and '.join(targets)}; import it from there ({old} will be removed)"
        ], old
        assert seen[old]["names"], f"{old} forwards no names"


def test_old_names_are_the_new_objects() -> None:
    done = run_python("""
        import json, warnings
        from lladapt.adapters import model, sites
        from lladapt.adapters.files import to_peft_keys
        from lladapt.adapters.meta_check import count_parameters
        from lladapt.data.loading import load_set
        from lladapt.models.loading import load_model

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from lladapt.adapt import AdaptedModel, site_for_path
            from lladapt.adapter_files import load_adapter
            from lladapt.adapter_files import to_peft_keys as old_to_peft_keys
            from lladapt.data import load_set as old_load_set
            from lladapt.models import load_model as old_load_model
            from lladapt.params import count_parameters as old_count_parameters
        same = [AdaptedModel is model.AdaptedModel, site_for_path is sites.site_for_path,
                load_adapter is model.load_adapter, old_to_peft_keys is to_peft_keys,
                old_load_set is load_set, old_load_model is load_model,
                old_count_parameters is count_parameters]
        print(json.dumps({"same": same, "messages": [str(w.message) for w in caught]}))
    """)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["same"] == [True] * 7
    messages = seen["messages"]
    assert ("lladapt.models.load_model moved to lladapt.models.loading.load_model; import it from "
            "there (lladapt.models.load_model will be removed)") in messages
    assert ("lladapt.data.load_set moved to lladapt.data.loading.load_set; import it from there "
            "(lladapt.data.load_set will be removed)") in messages
    assert len(messages) == 5  # one a module or name: adapt, adapter_files, data, models, params


def test_an_unknown_name_of_an_old_path_is_an_import_error() -> None:
    done = run_python("""
        import warnings
        warnings.simplefilter("ignore")
        try:
            from lladapt.adapt import no_such_name
        except ImportError as exc:
            print("ImportError:", exc)
        try:
            from lladapt.models import no_such_name
        except ImportError as exc:
            print("ImportError:", exc)
    """)
    assert "ImportError: cannot import name 'no_such_name' from 'lladapt.adapt'" in done.stdout
    assert "ImportError: cannot import name 'no_such_name' from 'lladapt.models'" in done.stdout


def test_no_module_of_lladapt_imports_an_old_path() -> None:
    done = run_python("""
        import importlib, pkgutil, warnings
        warnings.filterwarnings("error", message=".* moved to lladapt", category=DeprecationWarning)
        import lladapt, lladapt.plugins, lladapt.registry
        names = sorted({m.name for pkg in (lladapt, lladapt.plugins)
                        for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")})
        for name in names:
            if not name.endswith("__main__"):
                importlib.import_module(name)
        print(len(names), "modules")
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[0]) > 90
