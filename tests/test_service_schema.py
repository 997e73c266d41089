"""SGD service schemas (``training.common.service_schema``): every real SGD schema reads, and every bad one is
refused with the path of the field at fault, quickly, whatever its size."""

from __future__ import annotations

import ast
import copy
import json
import time
from pathlib import Path

import pytest

from conftest import POTTERY_SCHEMA

from training.common import service_schema
from training.common.errors import DataFormatError
from training.common.service_schema import (MAX_DESCRIPTION_CHARS, MAX_INTENTS, MAX_POSSIBLE_VALUES, MAX_SCHEMA_BYTES,
                                            MAX_SLOTS, MAX_VALUE_CHARS, SchemaError, ServiceSchema, parse_schema,
                                            read_schemas, schema_digest)

SGD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sgd"
SCHEMA_FILES = [SGD / "schema-train.json", SGD / "schema-dev.json"]

POTTERY = POTTERY_SCHEMA  # (conftest)


def pottery(**changes) -> dict:
    schema = copy.deepcopy(POTTERY)
    schema.update(changes)
    return schema


def error_of(obj, where: str = "") -> str:
    with pytest.raises(SchemaError) as caught:
        parse_schema(obj, where)
    return str(caught.value)


@pytest.fixture(scope="module")
def real_files():
    missing = [path for path in SCHEMA_FILES if not path.is_file()]
    if missing:
        pytest.skip(f"SGD schemas not found: {missing}")
    return SCHEMA_FILES


def test_every_real_sgd_schema_reads_and_round_trips(real_files):
    for path in real_files:
        raw = json.loads(path.read_text(encoding="utf-8"))
        schemas = read_schemas(path)
        assert [s.service_name for s in schemas] == [item["service_name"] for item in raw]
        assert [s.to_json() for s in schemas] == raw  # nothing lost, nothing added: SGD's object back
        assert len({schema_digest(s) for s in schemas}) == len(schemas)


def test_the_limits_leave_room_above_the_real_schemas(real_files):
    """The limits refuse abuse, not data: the largest real figures are well inside them."""
    schemas = [s for path in real_files for s in read_schemas(path)]
    slots = [slot for s in schemas for slot in s.slots]
    assert max(len(s.slots) for s in schemas) * 2 <= MAX_SLOTS
    assert max(len(s.intents) for s in schemas) * 2 <= MAX_INTENTS
    assert max(len(slot.possible_values) for slot in slots) * 2 <= MAX_POSSIBLE_VALUES
    assert max(len(v) for slot in slots for v in slot.possible_values) * 2 <= MAX_VALUE_CHARS
    descriptions = [s.description for s in schemas] + [x.description for s in schemas for x in [*s.slots, *s.intents]]
    assert max(map(len, descriptions)) * 2 <= MAX_DESCRIPTION_CHARS
    # SGD lists example values for some free-form slots (Restaurants_1's cuisine): allowed.
    assert any(not slot.is_categorical and slot.possible_values for slot in slots)


def test_a_missing_field_is_named_by_file_item_and_path(tmp_path):
    second = pottery(service_name="Pottery_2")
    del second["slots"][1]["description"]
    path = tmp_path / "schema-x.json"
    path.write_text(json.dumps([POTTERY, second]), encoding="utf-8")
    with pytest.raises(SchemaError) as caught:
        read_schemas(path)
    assert str(caught.value) == f"{path}: [1].slots[1].description: field required"
    assert isinstance(caught.value, DataFormatError) and caught.value.path == str(path)


def test_one_object_file_and_a_bad_file(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(POTTERY), encoding="utf-8")
    assert [s.service_name for s in read_schemas(one)] == ["Pottery_1"]
    bad = tmp_path / "bad.json"
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(SchemaError, match=r"bad\.json: not JSON"):
        read_schemas(bad)
    bad.write_text("3", encoding="utf-8")
    with pytest.raises(SchemaError, match="a list of service schemas"):
        read_schemas(bad)


def test_a_service_named_twice_in_a_file(tmp_path):
    path = tmp_path / "schema-x.json"
    path.write_text(json.dumps([POTTERY, pottery(description="Another"), pottery(service_name="Pottery_3")]))
    with pytest.raises(SchemaError) as caught:
        read_schemas(path)
    assert str(caught.value) == f"{path}: [1].service_name: 'Pottery_1' is also the name of item [0]"


def test_a_body_has_no_file_in_its_messages():
    broken = pottery()
    del broken["slots"][0]["name"]
    assert error_of(broken) == "slots[0].name: field required"
    assert error_of(broken, "upload.json") == "upload.json: slots[0].name: field required"
    assert error_of([POTTERY]) == "should be a JSON object"


@pytest.mark.parametrize("field, value", [("is_categorical", "yes"), ("is_categorical", 1), ("description", 5),
                                          ("possible_values", "low"), ("name", None)])
def test_wrong_types_are_not_coerced(field, value):
    broken = pottery()
    broken["slots"][0][field] = value
    message = error_of(broken)
    assert message.startswith(f"slots[0].{field}"), message
    assert "should be a valid" in message


def test_names_and_duplicates():
    assert error_of(pottery(service_name="pottery/../x")).startswith("service_name: not a valid name: a letter")
    assert error_of(pottery(service_name="P" * 65)).startswith("service_name: not a valid name")
    parse_schema(pottery(service_name="P" * 64))
    assert error_of(pottery(service_name="Pottery_1\n")).startswith("service_name: not a valid name")

    twice = pottery()
    twice["slots"][1]["name"] = "kiln_temperature"
    twice["intents"][0].update(optional_slots={}, result_slots=["kiln_temperature"])
    assert error_of(twice) == "slots[1].name: the slot 'kiln_temperature' is given twice"

    twice = pottery()
    twice["intents"].append(copy.deepcopy(twice["intents"][0]))
    assert error_of(twice) == "intents[1].name: the intent 'BookFiring' is given twice"

    twice = pottery()
    twice["slots"][0]["possible_values"] = ["low", "high", "low"]
    assert error_of(twice) == "slots[0].possible_values[2]: the value 'low' is given twice"


def test_intents_name_slots_of_their_service():
    broken = pottery()
    broken["intents"][0]["required_slots"] = ["kiln_temperature", "oven"]
    broken["intents"][0]["optional_slots"] = {"shelf": "top"}
    assert error_of(broken) == ("intents[0].required_slots[1]: 'oven' is not a slot of this service; "
                                "intents[0].optional_slots.shelf: 'shelf' is not a slot of this service")


def test_categorical_slots_need_values():
    broken = pottery()
    broken["slots"][0]["possible_values"] = []
    assert error_of(broken) == "slots[0].possible_values: a categorical slot needs its possible values"
    examples = pottery()
    examples["slots"][1]["possible_values"] = ["clear", "celadon"]  # a free-form slot with examples: fine
    assert parse_schema(examples).slots[1].possible_values == ["clear", "celadon"]


def test_extra_fields_are_refused():
    extra = pottery(owner="me")
    extra["slots"][0]["colour"] = "red"
    assert error_of(extra) == "slots[0].colour: extra inputs are not permitted; owner: extra inputs are not permitted"


def test_huge_schemas_are_refused_fast():
    started = time.perf_counter()
    many = pottery(slots=[{"name": f"s{i}", "description": "d", "is_categorical": False} for i in range(10_000)])
    assert error_of(many) == f"slots: list should have at most {MAX_SLOTS} items after validation, not 10000"
    long = pottery(description="x" * 1_000_000)
    assert error_of(long) == f"description: string should have at most {MAX_DESCRIPTION_CHARS} characters"
    values = pottery()
    values["slots"][0]["possible_values"] = [f"v{i}" for i in range(MAX_POSSIBLE_VALUES + 1)]
    assert error_of(values).startswith(f"slots[0].possible_values: list should have at most {MAX_POSSIBLE_VALUES}")
    assert error_of(pottery(intents=[])).startswith("intents: list should have at least 1 item")
    assert error_of(pottery(description="")).startswith("description: string should have at least 1 character")
    # Within every field's limit, and still too big as a whole.
    big = pottery(slots=[{"name": f"s{i}", "description": "d" * MAX_DESCRIPTION_CHARS, "is_categorical": True,
                          "possible_values": [f"{j:03d}" + "v" * (MAX_VALUE_CHARS - 3) for j in range(60)]}
                         for i in range(MAX_SLOTS)])
    big["intents"][0].update(required_slots=["s0"], optional_slots={}, result_slots=[])
    assert error_of(big).startswith(f"the schema is ") and error_of(big).endswith(f"at most {MAX_SCHEMA_BYTES}")
    assert time.perf_counter() - started < 1.0


def test_many_errors_list_the_first_few():
    broken = pottery(slots=[{"name": f"s{i}", "is_categorical": False} for i in range(8)])
    message = error_of(broken)
    assert message.startswith("slots[0].description: field required; slots[1].description: field required")
    assert message.count(";") == 5 and message.endswith("; and 3 more")


def test_digest_and_to_json():
    schema = parse_schema(POTTERY)
    digest = schema_digest(schema)
    assert len(digest) == 16 and int(digest, 16) >= 0
    minimal = pottery()
    del minimal["slots"][1]["possible_values"]  # a default left out: the same schema
    assert schema_digest(parse_schema(minimal)) == digest
    assert parse_schema(minimal) == schema and parse_schema(minimal).to_json() == POTTERY
    assert schema_digest(parse_schema(pottery(description="Book a kiln"))) != digest
    with pytest.raises(Exception):  # frozen: a cached schema cannot be changed under other threads
        schema.description = "changed"
    assert isinstance(schema, ServiceSchema)


def test_the_module_imports_nothing_of_training_but_its_errors():
    """The server imports it: no TensorFlow, no model code behind it."""
    tree = ast.parse(Path(service_schema.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert {name for name in imported if name.split(".")[0] == "training"} == {"training.common.errors"}
