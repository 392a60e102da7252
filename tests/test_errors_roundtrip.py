"""Every error class, built from any values its field types can write, comes back from its wire."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stashd import errors
from stashd.cli_data import CLI_WORDS
from stashd.client import PYTHON_WORDS
from stashd.errors import StashError, from_wire
from stashd.errorwire import Field, Seconds, Word, placeholders
from stashd.http.errors import HTTP_WORDS

# The classes from_wire reads, in the order it tries them; StashError and CommandError
# (the fallbacks) and AuthenticationError (a base without a text of its own) are the rest.
READ = sorted(
    {cls for pairs in errors._READER.codes.values() for cls, _ in pairs}, key=lambda c: c.__name__
)


def test_every_class_with_a_text_is_read() -> None:
    """No class of stashd.errors escapes from_wire but the bases it falls back to."""
    every = {
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, StashError)
    }
    assert every - set(READ) == {StashError, errors.CommandError, errors.AuthenticationError}


def _texts(field: Field[Any]) -> st.SearchStrategy[str]:
    """Any text the field's pattern matches, the texts a message may hold for it."""
    return st.from_regex(re.compile(field.pattern, re.DOTALL), fullmatch=True)


@st.composite
def _built(draw: st.DrawFn, cls: type[StashError]) -> StashError:
    """An error of ``cls``, in any of its forms, from values drawn for each field it writes."""
    form = draw(st.sampled_from(cls.forms))
    values: dict[str, Any] = {
        name: cls.fields[name].absent for other in cls.forms for name in other.names
    }
    for name, field in form.fields.items():
        # A value as its field writes it: a duration drawn as 99999999 is written 1e+08.
        value = field.parse(draw(_texts(field)))
        values.update(field.read(name, field.render(value)))
    return cls(**values)


@pytest.mark.parametrize("cls", READ, ids=lambda cls: cls.__name__)
@given(data=st.data())
def test_every_class_round_trips_from_generated_fields(
    cls: type[StashError], data: st.DataObject
) -> None:
    """from_wire(e.wire) is e's class, with e's fields and e's text."""
    exc = data.draw(_built(cls))
    back = from_wire(exc.wire)
    assert type(back) is cls, exc.wire
    assert vars(back) == vars(exc)
    assert back.wire == exc.wire
    assert back.args == exc.args


def test_json_details_carry_their_position_and_depth() -> None:
    """The facets of a NOTJSON detail are read from the detail itself."""
    back = from_wire(
        "NOTJSON merge patch is not valid JSON: Expecting ',' at line 3 column 2 (char 40)"
    )
    assert isinstance(back, errors.NotJSON)
    assert (back.what, back.line, back.column, back.position) == ("merge patch", 3, 2, 40)
    assert (back.limit, back.actual) == (None, None)
    deep = from_wire(f"NOTJSON stored value is not valid JSON: {errors.nested_past(600, 512)}")
    assert isinstance(deep, errors.StoredNotJSON)
    assert (deep.actual, deep.limit, deep.line) == (600, 512, None)


@pytest.mark.parametrize(
    ("door", "words"), [("python", PYTHON_WORDS), ("cli", CLI_WORDS), ("http", HTTP_WORDS)]
)
def test_door_words_name_only_fields_of_their_class(
    door: str, words: dict[type[StashError], str]
) -> None:
    """A door's template for an error names fields that error has, and renders."""
    for cls, template in words.items():
        assert set(placeholders(template)) <= set(cls.fields), (door, cls, template)


def test_door_words_render_with_the_field_types() -> None:
    """A door's words are written by the same renderer as the wire text."""
    exc = errors.BadExtend(-5).in_words(PYTHON_WORDS[errors.BadExtend])
    assert str(exc) == "extra_seconds must be a positive number, got -5"
    assert exc.requested == -5
    timeout = errors.RequestTimeout(99999999.0)
    assert timeout.worded("waited {limit} s") == "waited 1e+08 s"


def test_declarations_that_could_not_read_back_are_refused() -> None:
    """Two free texts in one form, an unannotated field, or a format spec fail at class time."""
    with pytest.raises(TypeError, match="ambiguous"):

        class _TwoFree(StashError):
            template = "{a} and {b}"
            a: str
            b: str

    with pytest.raises(TypeError, match="annotate"):

        class _Unannotated(StashError):
            template = "count {n}"

    with pytest.raises(TypeError, match="bare"):

        class _Spec(StashError):
            template = "took {t:g} s"
            t: Seconds

    class _Fine(StashError):
        code = "FINE"
        template = "{a} and {b}"
        a: str
        b: Word

    assert list(_Fine.fields) == ["a", "b"]


def test_fields_are_listed_as_declared() -> None:
    """A class's fields come in the order it annotates them, facets and constants included."""
    assert list(errors.InvalidTTL.fields) == ["requested", "minimum", "maximum"]
    assert list(errors.IncompleteBody.fields) == ["expected", "actual"]
    assert list(errors.StoredNotJSON.fields) == [
        "what",
        "detail",
        "line",
        "column",
        "position",
        "limit",
        "actual",
    ]
    assert list(errors.InvalidRequest.fields) == [
        "message",
        "field",
        "minimum",
        "maximum",
        "requested",
    ]
