"""The protobuf messages of a Core ML model file, declared here as data.

Only the wire format matters to a protobuf reader: field numbers and types.
So this module declares, under a package of its own (nothing clashes with
coremltools' classes when both are loaded), the part of Core ML's Model.proto
and the whole of MIL.proto that reading and writing an mlprogram needs, and
builds message classes from that table with protobuf's own runtime. Fields
not declared (image inputs, classifier settings, the other model kinds, ...)
are kept by protobuf as unknown fields: a model read and written again
carries them through unchanged.

Field numbers and types follow Apple's published Core ML format
(mlmodel/format/Model.proto, FeatureTypes.proto, MIL.proto).
"""
from __future__ import annotations

from functools import lru_cache

# field types (descriptor.proto's numbering)
DOUBLE, FLOAT, INT64, UINT64, INT32, BOOL, STRING, BYTES = 1, 2, 3, 4, 5, 8, 9, 12

PACKAGE = "weightpress.coreml"


def _map(key, value):
    return ("map", key, value)


# message -> [(number, name, type | message name | _map(key, value), repeated?, oneof group)]
SCHEMA = {
    # Model.proto: only the parts an mlprogram needs; the rest travels as unknown fields
    "Model": [(1, "specificationVersion", INT32), (2, "description", "ModelDescription"),
              (10, "isUpdatable", BOOL), (502, "mlProgram", "Program")],
    "ModelDescription": [(1, "input", "FeatureDescription", True), (10, "output", "FeatureDescription", True),
                         (100, "metadata", "Metadata")],
    "Metadata": [(1, "shortDescription", STRING), (2, "versionString", STRING), (3, "author", STRING),
                 (4, "license", STRING), (100, "userDefined", _map(STRING, STRING))],
    "FeatureDescription": [(1, "name", STRING), (2, "shortDescription", STRING), (3, "type", "FeatureType")],
    "FeatureType": [(5, "multiArrayType", "ArrayFeatureType"), (1000, "isOptional", BOOL)],
    "ArrayFeatureType": [(1, "shape", INT64, True), (2, "dataType", INT32), (31, "shapeRange", "ShapeRange")],
    "ShapeRange": [(1, "sizeRanges", "SizeRange", True)],
    "SizeRange": [(1, "lowerBound", UINT64), (2, "upperBound", INT64)],
    # MIL.proto, whole
    "Program": [(1, "version", INT64), (2, "functions", _map(STRING, "Function")), (3, "docString", STRING),
                (4, "attributes", _map(STRING, "Value"))],
    "Function": [(1, "inputs", "NamedValueType", True), (2, "opset", STRING),
                 (3, "block_specializations", _map(STRING, "Block")), (4, "attributes", _map(STRING, "Value"))],
    "Block": [(1, "inputs", "NamedValueType", True), (2, "outputs", STRING, True),
              (3, "operations", "Operation", True), (4, "attributes", _map(STRING, "Value"))],
    "Argument": [(1, "arguments", "Binding", True)],
    "Binding": [(1, "name", STRING, False, "binding"), (2, "value", "Value", False, "binding")],
    "Operation": [(1, "type", STRING), (2, "inputs", _map(STRING, "Argument")),
                  (3, "outputs", "NamedValueType", True), (4, "blocks", "Block", True),
                  (5, "attributes", _map(STRING, "Value"))],
    "NamedValueType": [(1, "name", STRING), (2, "type", "ValueType")],
    "ValueType": [(1, "tensorType", "TensorType", False, "type"), (2, "listType", "ListType", False, "type"),
                  (3, "tupleType", "TupleType", False, "type"),
                  (4, "dictionaryType", "DictionaryType", False, "type"),
                  (5, "stateType", "StateType", False, "type")],
    "TensorType": [(1, "dataType", INT32), (2, "rank", INT64), (3, "dimensions", "Dimension", True),
                   (4, "attributes", _map(STRING, "Value"))],
    "TupleType": [(1, "types", "ValueType", True)],
    "ListType": [(1, "type", "ValueType"), (2, "length", "Dimension")],
    "DictionaryType": [(1, "keyType", "ValueType"), (2, "valueType", "ValueType")],
    "StateType": [(1, "wrappedType", "ValueType")],
    "Dimension": [(1, "constant", "ConstantDimension", False, "dimension"),
                  (2, "unknown", "UnknownDimension", False, "dimension")],
    "ConstantDimension": [(1, "size", UINT64)],
    "UnknownDimension": [(1, "variadic", BOOL)],
    "Value": [(1, "docString", STRING), (2, "type", "ValueType"),
              (3, "immediateValue", "ImmediateValue", False, "value"),
              (5, "blobFileValue", "BlobFileValue", False, "value")],
    "ImmediateValue": [(1, "tensor", "TensorValue", False, "value"), (2, "tuple", "TupleValue", False, "value"),
                       (3, "list", "ListValue", False, "value"),
                       (4, "dictionary", "DictionaryValue", False, "value")],
    "BlobFileValue": [(1, "fileName", STRING), (2, "offset", UINT64)],
    "TensorValue": [(1, "floats", "RepeatedFloats", False, "value"), (2, "ints", "RepeatedInts", False, "value"),
                    (3, "bools", "RepeatedBools", False, "value"),
                    (4, "strings", "RepeatedStrings", False, "value"),
                    (5, "longInts", "RepeatedLongInts", False, "value"),
                    (6, "doubles", "RepeatedDoubles", False, "value"),
                    (7, "bytes", "RepeatedBytes", False, "value")],
    "RepeatedFloats": [(1, "values", FLOAT, True)],
    "RepeatedDoubles": [(1, "values", DOUBLE, True)],
    "RepeatedInts": [(1, "values", INT32, True)],
    "RepeatedLongInts": [(1, "values", INT64, True)],
    "RepeatedBools": [(1, "values", BOOL, True)],
    "RepeatedStrings": [(1, "values", STRING, True)],
    "RepeatedBytes": [(1, "values", BYTES)],
    "TupleValue": [(1, "values", "Value", True)],
    "ListValue": [(1, "values", "Value", True)],
    "DictionaryValue": [(1, "values", "KeyValuePair", True)],
    "KeyValuePair": [(1, "key", "Value"), (2, "value", "Value")],
}


def _set_type(field, kind) -> None:
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    if isinstance(kind, str):
        field.type = F.TYPE_MESSAGE
        field.type_name = f".{PACKAGE}.{kind}"
    else:
        field.type = kind


def _message(file, name, fields) -> None:
    from google.protobuf.descriptor_pb2 import FieldDescriptorProto as F

    msg = file.message_type.add(name=name)
    oneofs: list = []
    for number, fname, kind, *rest in fields:
        repeated = bool(rest and rest[0])
        group = rest[1] if len(rest) > 1 else None
        f = msg.field.add(name=fname, number=number, json_name=fname)
        f.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        if isinstance(kind, tuple):  # a map: a repeated nested entry type, as protoc makes it
            entry_name = fname[0].upper() + fname[1:] + "Entry"
            entry = msg.nested_type.add(name=entry_name)
            entry.options.map_entry = True
            for i, (n, k) in enumerate((("key", kind[1]), ("value", kind[2])), 1):
                ef = entry.field.add(name=n, number=i, json_name=n, label=F.LABEL_OPTIONAL)
                _set_type(ef, k)
            f.label = F.LABEL_REPEATED
            f.type = F.TYPE_MESSAGE
            f.type_name = f".{PACKAGE}.{name}.{entry_name}"
        else:
            _set_type(f, kind)
        if group is not None:
            if group not in oneofs:
                oneofs.append(group)
                msg.oneof_decl.add(name=group)
            f.oneof_index = oneofs.index(group)


@lru_cache(maxsize=None)
def messages():
    """name -> message class, built once per process (in a pool of our own)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="weightpress_coreml.proto", package=PACKAGE, syntax="proto3")
    for name, fields in SCHEMA.items():
        _message(file, name, fields)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    make = getattr(message_factory, "GetMessageClass", None)  # protobuf >= 4.22
    if make is None:  # pragma: no cover - older protobuf
        make = message_factory.MessageFactory(pool).GetPrototype
    return {name: make(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in SCHEMA}


def new(message: str, **fields):
    return messages()[message](**fields)


def parse_model(data: bytes):
    model = messages()["Model"]()
    model.ParseFromString(data)
    return model
