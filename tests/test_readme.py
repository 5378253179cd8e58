"""The README's Python SDK example runs as written."""

from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_sdk_example_runs() -> None:
    section = README.read_text().split("## The Python SDK", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md (SDK example)", "exec"), namespace)
    training = namespace["training"].height
    assert abs(namespace["result"].population.height - training) < 0.02 * training  # made from training only
    assert namespace["report"].to_dict()["privacy"]["dp_audit"]["verdict"] == "green"
    assert abs(namespace["result"].epsilon - 1.0) < 1e-9
