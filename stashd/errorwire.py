"""How an error's message is written from its fields and read back: one template, compiled once.

An error class declares its message as a template (``"version is {current}, IFVERSION
expected {expected}"``) and its fields as annotations; each field's type says how its
value is written into the text and which texts it reads back (:class:`Field`). A
:class:`Form` is one template compiled against those types: :meth:`Form.render` writes
the message, :meth:`Form.read` turns a message back into the fields, through a pattern
built from the template and nothing else. Doors that word an error their own way render
their template with the same field types (:func:`render`).
"""

import re
import string
import types
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import (
    Annotated,
    Any,
    ClassVar,
    Final,
    Generic,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

T = TypeVar("T")

#: How a renderer reads a field's value: a name in, the value out (``getattr`` on an error).
Getter = Callable[[str], Any]


class Field(Generic[T]):
    """How one kind of value is written into a message and read back from it.

    ``pattern`` matches every text :meth:`render` can write, and has no capturing group
    (a form wraps it in its own). A field that may hold any text (``free``) leaves a
    template nothing to tell where it ends but the text around it, so a form holds one
    such field at most. ``absent`` is the value of a field a form leaves out.
    """

    pattern: str = ".*"
    free: bool = False
    absent: T | None = None
    #: Further fields a value of this type carries within its text (see JSONDetailField).
    facets: tuple[str, ...] = ()

    def render(self, value: T) -> str:
        """The text of ``value`` inside a message."""
        return str(value)

    def parse(self, text: str) -> T:
        """The value a text matched by ``pattern`` stands for."""
        raise NotImplementedError

    def present(self, value: T | None) -> bool:
        """Whether a form naming this field can be used for ``value``."""
        return value is not None

    def read(self, name: str, text: str) -> dict[str, Any]:
        """The fields ``text`` stands for: its own value, and the facets it carries."""
        return {name: self.parse(text)}


class IntField(Field[int]):
    """A whole number, in ASCII digits (a version, a byte count, a number of seconds)."""

    pattern = "-?[0-9]+"

    def parse(self, text: str) -> int:
        """The number."""
        return int(text)


class LimitField(IntField):
    """A limit where 0 stands for none: a form naming it is used only when it is not 0."""

    absent = 0

    def present(self, value: int | None) -> bool:
        """Only a limit there is."""
        return bool(value)


class SecondsField(Field[float]):
    """A duration as ``{:g}`` writes it: six significant digits, so 1e+08 reads back as 1e8."""

    pattern = r"-?(?:inf|[0-9]+(?:\.[0-9]+)?(?:e[+-][0-9]+)?)"

    def render(self, value: float) -> str:
        """The shortest form of the number."""
        return f"{value:g}"

    def parse(self, text: str) -> float:
        """The number."""
        return float(text)


class TextField(Field[str]):
    """Any text at all (a cause, a detail, a whole message)."""

    free = True

    def parse(self, text: str) -> str:
        """The text itself."""
        return text


class WordField(TextField):
    """A text without whitespace (a command's name, an exception's class)."""

    pattern = r"\S*"
    free = False


class LabelField(TextField):
    """A few words naming what was sent (``merge patch``): letters, digits and spaces."""

    pattern = r"[\w ]*"
    free = False


class ListedField(Field[tuple[str, ...]]):
    """Names joined by ``", "`` (the methods a path allows)."""

    pattern = r"(?:[^\s,]+(?:, [^\s,]+)*)?"

    def render(self, value: tuple[str, ...]) -> str:
        """The names, comma-separated."""
        return ", ".join(value)

    def parse(self, text: str) -> tuple[str, ...]:
        """The names."""
        return tuple(text.split(", ")) if text else ()


#: One text of QuotedField: any text without a quote followed by a space.
_QUOTED_TEXT: Final = r"(?:[^']|'(?! ))*"


class QuotedField(Field[tuple[str, ...]]):
    """Texts each quoted and followed by a space, as Redis quotes a command's arguments.

    A text that holds a quote followed by a space reads as two: a message with one does
    not come back as its class (its text does).
    """

    pattern = f"(?:'{_QUOTED_TEXT}' )*"

    def render(self, value: tuple[str, ...]) -> str:
        """Each text in quotes, each followed by a space."""
        return "".join(f"'{item}' " for item in value)

    def parse(self, text: str) -> tuple[str, ...]:
        """The texts."""
        return tuple(re.findall(f"'({_QUOTED_TEXT})' ", text, re.DOTALL))


# -- templates --------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _parts(template: str) -> tuple[tuple[str, str | None], ...]:
    """A template as (literal text, field name or None) pairs, in order.

    A placeholder is a bare name: how a value is written is its field type's business,
    so a format spec or a conversion (``{x:g}``, ``{x!r}``) is refused.
    """
    parts = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if spec or conversion:
            msg = f"{template!r}: write {{{name}}} bare, its field type renders it"
            raise TypeError(msg)
        parts.append((literal, name or None))
    return tuple(parts)


def placeholders(template: str) -> tuple[str, ...]:
    """The names of the fields ``template`` writes, in order."""
    return tuple(name for _, name in _parts(template) if name is not None)


class Template:
    """A template bound to the types of the fields it names: the one writer of error texts.

    Every error's wire text and every door's own words for an error are written here.
    """

    def __init__(self, template: str, fields: Mapping[str, Field[Any]]) -> None:
        self.template = template
        self.names = placeholders(template)
        unknown = [name for name in self.names if name not in fields]
        if unknown:
            msg = f"{template!r}: {unknown} are not fields of this error"
            raise TypeError(msg)
        self.fields = {name: fields[name] for name in self.names}
        self._writes = tuple(
            (literal, name or "", None if name is None else fields[name].render)
            for literal, name in _parts(template)
        )
        # Most errors have no field: their text is written once, here.
        self._constant = "".join(literal for literal, _ in _parts(template))

    def write(self, get: Getter) -> str:
        """The text, with each field written by its type from ``get(name)``."""
        if not self.names:
            return self._constant
        return "".join(
            [
                literal if write is None else literal + write(get(name))
                for literal, name, write in self._writes
            ]
        )


def render(template: str, fields: Mapping[str, Field[Any]], get: Getter) -> str:
    """``template`` written with the values ``get`` gives for the ``fields`` it names."""
    return Template(template, fields).write(get)


class Form(Template):
    """A template of an error's own, compiled to read its texts back.

    ``literal`` counts the characters it fixes: of two forms that read the same text
    (``Protocol error: {detail}`` and the query buffer's), the one fixing more is the
    more specific, and is tried first.
    """

    def __init__(self, template: str, fields: Mapping[str, Field[Any]]) -> None:
        super().__init__(template, fields)
        if len(set(self.names)) < len(self.names):
            msg = f"{template!r}: a field may be written once"
            raise TypeError(msg)
        if sum(field.free for field in self.fields.values()) > 1:
            msg = f"{template!r}: two free-text fields make the text ambiguous"
            raise TypeError(msg)
        parts = _parts(template)
        self.literal = sum(len(literal) for literal, _ in parts)
        #: The pattern of the texts this form writes, without groups, to embed in another.
        self.bare = "".join(
            re.escape(literal) + ("" if name is None else f"(?:{fields[name].pattern})")
            for literal, name in parts
        )
        self._pattern = re.compile(
            "".join(
                re.escape(literal) + ("" if name is None else f"(?P<{name}>{fields[name].pattern})")
                for literal, name in parts
            ),
            re.DOTALL,
        )

    def fits(self, get: Getter) -> bool:
        """Whether every field this form names has a value it can write."""
        return all(field.present(get(name)) for name, field in self.fields.items())

    def read(self, text: str) -> dict[str, Any] | None:
        """The fields of a text this form wrote, or None for another text.

        Raises ValueError for a number Python will not read (thousands of digits).
        """
        match = self._pattern.fullmatch(text)
        if match is None:
            return None
        values: dict[str, Any] = {}
        for name, field in self.fields.items():
            values.update(field.read(name, match[name]))
        return values


# -- a JSON parser's reason, which may carry its position or the nesting depth ---------------

_INT: Final = IntField()
_TEXT: Final = TextField()

#: The decoder's message with where it stopped, as json.JSONDecodeError gives them.
AT_POSITION: Final = Form(
    "{reason} at line {line} column {column} (char {position})",
    {"reason": _TEXT, "line": _INT, "column": _INT, "position": _INT},
)
#: A text whose arrays and objects nest past the depth limit.
NESTED: Final = Form(
    "nested {actual} levels deep, the limit is {limit} levels", {"actual": _INT, "limit": _INT}
)


class JSONDetailField(TextField):
    """Why a text is not JSON: free text, whose facets are the position or the depth it names.

    Its pattern reads any text, like TextField's; it is spelled as the forms that carry
    facets, or any text, so that texts drawn from it (in tests) take each shape.
    """

    pattern = f"(?:{AT_POSITION.bare}|{NESTED.bare}|.*)"
    facets = ("line", "column", "position", "limit", "actual")

    def read(self, name: str, text: str) -> dict[str, Any]:
        """The reason, and the facets it names (None for those it does not)."""
        values: dict[str, Any] = dict.fromkeys(self.facets)
        for form in (AT_POSITION, NESTED):
            found = form.read(text)
            if found is not None:
                values.update((facet, found[facet]) for facet in self.facets if facet in found)
        values[name] = text
        return values


# -- field types as annotations ------------------------------------------------------------
# An error class annotates each field; plain ``int`` and ``str`` are IntField and
# TextField, the others name their type with one of these.

Limit = Annotated[int, LimitField()]
Seconds = Annotated[float, SecondsField()]
Word = Annotated[str, WordField()]
Label = Annotated[str, LabelField()]
Listed = Annotated[tuple[str, ...], ListedField()]
Quoted = Annotated[tuple[str, ...], QuotedField()]
JSONDetail = Annotated[str, JSONDetailField()]

_PLAIN: Final[Mapping[object, Field[Any]]] = {int: _INT, str: _TEXT}


def field_of(hint: object) -> Field[Any] | None:
    """The field type an annotation names (``X | None`` is X's), or None if it names none."""
    if get_origin(hint) is Annotated:
        return next((m for m in get_args(hint)[1:] if isinstance(m, Field)), None)
    if get_origin(hint) in (Union, types.UnionType):
        kinds = [arg for arg in get_args(hint) if arg is not type(None)]
        return field_of(kinds[0]) if len(kinds) == 1 else None
    return _PLAIN.get(hint)


# -- error classes: their declarations read, their texts read back ------------------------


def declare(
    cls: type[Any], base_fields: Mapping[str, Field[Any]] | None
) -> tuple[Mapping[str, Field[Any]], tuple[Form, ...] | None]:
    """The fields of an error class, and its templates compiled (None: it keeps its base's).

    Its fields are those its templates name, the facets their types carry, and those it
    annotates itself, in the order of the annotations; a class that keeps its base's
    template keeps its base's fields too (``base_fields``, None for the base of all).
    """
    hints = get_type_hints(cls, include_extras=True)

    def kind(name: str) -> Field[Any]:
        found = field_of(hints.get(name))
        if found is None:
            msg = f"{cls.__name__}.{name}: annotate the field with its type"
            raise TypeError(msg)
        return found

    own_template = "template" in vars(cls) or base_fields is None
    templates = (cls.template,) if isinstance(cls.template, str) else cls.template
    named = dict.fromkeys(name for template in templates for name in placeholders(template))
    for name in list(named):
        named.update(dict.fromkeys(kind(name).facets))
    own = vars(cls).get("__annotations__", {})
    named.update(dict.fromkeys(n for n, hint in own.items() if get_origin(hint) is not ClassVar))
    fields = dict(base_fields or {}) if not own_template else {}
    # In the order the class and its bases annotate them, which doors may list them in.
    order = list(hints)
    fields.update((name, kind(name)) for name in sorted(named, key=lambda n: order.index(n)))
    if not own_template:
        return MappingProxyType(fields), None
    return MappingProxyType(fields), tuple(Form(template, fields) for template in templates)


class Reader:
    """Error lines back to the classes that write them, with their fields.

    Per code, every form of every class that sends it, the most specific first. A class
    is called with its fields by name (those of its other forms given their ``absent``
    value), and is the answer only if it writes the very line read.
    """

    def __init__(self, classes: Iterable[type[Any]]) -> None:
        by_code: dict[str, list[tuple[type[Any], Form]]] = {}
        for cls in classes:
            by_code.setdefault(cls.code, []).extend((cls, form) for form in cls.forms)
        self.codes = {
            code: tuple(sorted(pairs, key=lambda pair: -pair[1].literal))
            for code, pairs in by_code.items()
        }

    def read(self, text: str) -> Any | None:  # noqa: ANN401 - an instance of a class given
        """The error ``text`` is the wire of, or None if no class given writes it."""
        code, _, message = text.partition(" ")
        for cls, form in self.codes.get(code, ()):
            try:
                values = form.read(message)
                if values is None:
                    continue
                left_out = {
                    name: cls.fields[name].absent
                    for other in cls.forms
                    for name in other.names
                    if name not in values
                }
                exc = cls(**left_out, **values)
            except ValueError:  # a number too odd for the class: not its text
                continue
            if exc.wire == text:
                return exc
        return None
