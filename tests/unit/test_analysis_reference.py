"""The analysis's outputs on its reference cases are byte for byte those committed in
tests/data/analysis_reference/ (fit.json's `fitted_at` and chinchilla_fit.json's `seconds`
masked; plots left out): a change that moves code changes no number, no table, no sentence.
The cases and how to rewrite them: tests/helpers/analysis_reference.py."""

from __future__ import annotations

import pytest
from helpers import analysis_reference as ref


@pytest.mark.slow
@pytest.mark.parametrize("which", sorted(ref.CASES))
def test_outputs_are_the_reference(tmp_path, which):
    ref.regenerate(which, tmp_path)
    found = ref.differences(which, tmp_path)
    assert not found, "outputs differ from tests/data/analysis_reference/:\n" + "\n".join(found)


def test_masking_hides_only_the_time():
    text = '{\n  "config_hash": "ab",\n  "fitted_at": "20260101T000000Z",\n  "level": 0.95\n}'
    assert ref.mask("fit.json", text) == text.replace("20260101T000000Z", "<masked>")
    assert ref.mask("chinchilla_fit.json", '  "seconds": 1.93\n}') == '  "seconds": "<masked>"\n}'
    assert ref.mask("summary.md", text) == text
