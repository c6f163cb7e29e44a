"""Clients nobody at forcebridge wrote, in Python, against `forcebridge sim --tls-ca`.

simple-salesforce over REST (create, upsert by External Id, a query paged through
nextRecordsUrl, get, describe, update, delete), then a Pub/Sub client generated here from
proto/pubsub_api.proto with grpcio-tools, decoding with Apache's avro package: GetTopic,
GetSchema, Subscribe from EARLIEST, the header's bitmap fields expanded here, and three refused
calls (Subscribe, ManagedSubscribe, PublishStream) with their trailers. One JSON object
per line ({"step": ...}); tests/interop.rs asserts them. Settings from the environment: SF_LOGIN_URL, SF_PUBSUB (host:port), SF_CLIENT_ID,
SF_CLIENT_SECRET, SF_CA (the test CA), PROTO (the proto file), OUT (a scratch directory under
target/, where the stubs are generated).
"""

import io
import json
import os
import subprocess
import sys
import threading

import grpc
import requests


def out(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def token():
    reply = requests.post(
        f"{os.environ['SF_LOGIN_URL']}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": os.environ["SF_CLIENT_ID"],
            "client_secret": os.environ["SF_CLIENT_SECRET"],
        },
        verify=os.environ["SF_CA"],
        timeout=30,
    )
    reply.raise_for_status()
    return reply.json()


def rest(session):
    from simple_salesforce import Salesforce

    os.environ["REQUESTS_CA_BUNDLE"] = os.environ["SF_CA"]
    sf = Salesforce(instance_url=session["instance_url"], session_id=session["access_token"], version="62.0")
    one = sf.Account.create({"Name": "Py One", "NumberOfEmployees": 7, "BillingCity": "Lyon"})
    two = sf.Account.create({"Name": "Py Two"})
    out("create", ids=[one["id"], two["id"]], success=[one["success"], two["success"]])
    first = sf.Account.upsert("External_Id__c/PY-1", {"Name": "Py Ext"})
    second = sf.Account.upsert("External_Id__c/PY-1", {"Name": "Py Ext 2"})
    out("upsert", statuses=[first, second])
    result = sf.query_all("SELECT Id, Name FROM Account")
    out("query_all", totalSize=result["totalSize"], fetched=len(result["records"]))
    record = sf.Account.get(one["id"])
    out("get", Name=record["Name"], NumberOfEmployees=record["NumberOfEmployees"], BillingCity=record["BillingCity"])
    describe = sf.Account.describe()
    out("describe", name=describe["name"], externalIds=sorted(f["name"] for f in describe["fields"] if f["externalId"]))
    # A field nulled and a component of a compound field changed: both bitmap forms in the event.
    updated = sf.Account.update(one["id"], {"NumberOfEmployees": None, "BillingCity": "Paris"})
    after = sf.Account.get(one["id"])
    out("update", status=updated, NumberOfEmployees=after["NumberOfEmployees"], BillingCity=after["BillingCity"])
    out("delete", status=sf.Account.delete(two["id"]))


def stubs():
    proto = os.environ["PROTO"]
    gen = os.path.join(os.environ["OUT"], "gen")
    os.makedirs(gen, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{os.path.dirname(proto)}",
         f"--python_out={gen}", f"--grpc_python_out={gen}", os.path.basename(proto)],
        check=True,
    )
    sys.path.insert(0, gen)
    import pubsub_api_pb2
    import pubsub_api_pb2_grpc

    return pubsub_api_pb2, pubsub_api_pb2_grpc


def field_names(schema, bitmaps):
    """The field names of a ChangeEventHeader bitmap field (Pub/Sub API Developer Guide, "Event
    Deserialization Considerations"): each string is a hex bitmap over the fields of the event's
    Avro schema, a set bit i naming field i; a `P-0xHEX` string is a bitmap over the fields of
    the compound field at position P, named `Compound.Field` (forcebridge's spelling)."""
    names = []
    for bitmap in bitmaps:
        parent, _, bits = bitmap.rpartition("-")
        fields, prefix = schema.fields, ""
        if parent:
            compound = schema.fields[int(parent)]
            record = next(t for t in compound.type.schemas if t.type == "record")
            fields, prefix = record.fields, compound.name + "."
        value = int(bits, 16)
        names.extend(prefix + f.name for i, f in enumerate(fields) if value >> i & 1)
    return names


def record_of(body, nulled):
    """forcebridge's `record` for a decoded event as README "Kafka record format" documents it:
    the fields carrying a value (compound fields nested, their empty components left out), and
    the nulled fields as null."""
    record = {}
    for name, value in body.items():
        if name == "ChangeEventHeader" or value is None:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
            if not value:
                continue
        record[name] = value
    for name in nulled:
        parent, _, child = name.rpartition(".")
        if parent:
            record.setdefault(parent, {})[child] = None
        else:
            record[name] = None
    return record


def subscribe(session, count):
    import avro.io
    import avro.schema

    pb, pb_grpc = stubs()
    with open(os.environ["SF_CA"], "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    channel = grpc.secure_channel(
        os.environ["SF_PUBSUB"], credentials,
        # The test CA's certificate names localhost and 127.0.0.1; gRPC checks the target name.
        options=[("grpc.ssl_target_name_override", "localhost")],
    )
    stub = pb_grpc.PubSubStub(channel)
    metadata = (
        ("accesstoken", session["access_token"]),
        ("instanceurl", session["instance_url"]),
        ("tenantid", session["id"].split("/")[-2]),
    )
    topic = stub.GetTopic(pb.TopicRequest(topic_name="/data/AccountChangeEvent"), metadata=metadata)
    schemas = {}

    def schema(schema_id):
        if schema_id not in schemas:
            info = stub.GetSchema(pb.SchemaRequest(schema_id=schema_id), metadata=metadata)
            schemas[schema_id] = avro.schema.parse(info.schema_json)
        return schemas[schema_id]

    # The request stream stays open while events are read, as a subscriber's does: ending it
    # (half-close) may end the subscription before the events are delivered.
    received = threading.Event()

    def requests_():
        yield pb.FetchRequest(topic_name=topic.topic_name, replay_preset=pb.ReplayPreset.EARLIEST, num_requested=count)
        received.wait()

    events = []
    for response in stub.Subscribe(requests_(), metadata=metadata):
        for consumer in response.events:
            parsed = schema(consumer.event.schema_id)
            reader = avro.io.DatumReader(parsed)
            body = reader.read(avro.io.BinaryDecoder(io.BytesIO(consumer.event.payload)))
            header = body["ChangeEventHeader"]
            events.append({
                "replayId": consumer.replay_id.hex(),
                "schemaId": consumer.event.schema_id,
                "changeType": header["changeType"],
                "recordIds": header["recordIds"],
                "commitTimestamp": header["commitTimestamp"],
                "commitNumber": str(header["commitNumber"]),
                "commitUser": header["commitUser"],
                "transactionKey": header["transactionKey"],
                "sequenceNumber": header["sequenceNumber"],
                "changeOrigin": header["changeOrigin"],
                "changedFields": field_names(parsed, header["changedFields"]),
                "nulledFields": field_names(parsed, header["nulledFields"]),
                "diffFields": field_names(parsed, header["diffFields"]),
                "record": record_of(body, field_names(parsed, header["nulledFields"])),
                "Name": body.get("Name"),
                "NumberOfEmployees": body.get("NumberOfEmployees"),
            })
        if len(events) >= count:
            break
    received.set()
    out("subscribe", topicSchemaId=topic.schema_id, events=events)
    out("errors", calls=errors(pb, stub, metadata))
    channel.close()


def errors(pb, stub, metadata):
    """Each refused call as the client sees it: status code, the `error-code` trailer, and whether
    the `rpc-id` trailer is the one the message ends with (Pub/Sub API Developer Guide,
    "Handling Errors": every error carries both)."""
    calls = {
        "Subscribe": lambda: list(stub.Subscribe(iter([pb.FetchRequest(
            topic_name="/data/NopeChangeEvent", replay_preset=pb.ReplayPreset.LATEST, num_requested=1)]),
            metadata=metadata)),
        "ManagedSubscribe": lambda: list(stub.ManagedSubscribe(iter([pb.ManagedFetchRequest(
            developer_name="Nope", num_requested=1)]), metadata=metadata)),
        "PublishStream": lambda: list(stub.PublishStream(iter([pb.PublishRequest(
            topic_name="/event/Order_Event__e")]), metadata=metadata)),
    }
    seen = []
    for name, call in calls.items():
        try:
            call()
            seen.append({"rpc": name, "code": "OK"})
        except grpc.RpcError as error:
            trailers = dict(error.trailing_metadata() or ())
            rpc_id = trailers.get("rpc-id", "")
            seen.append({
                "rpc": name,
                "code": error.code().name,
                "errorCode": trailers.get("error-code"),
                "rpcIdInMessage": bool(rpc_id) and error.details().endswith(f"rpcId: {rpc_id}"),
            })
    return seen


def main():
    session = token()
    out("token", instance_url=session["instance_url"])
    rest(session)
    subscribe(session, 6)
    out("done")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # the test prints stderr; this line names the step that failed
        out("failed", message=repr(error))
        raise
