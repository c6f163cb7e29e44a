"""Clients nobody at forcebridge wrote, in Python, against `forcebridge sim --tls-ca`.

simple-salesforce over REST (create, upsert by External Id, a query paged through
nextRecordsUrl, describe, delete), then a Pub/Sub client generated here from
proto/pubsub_api.proto with grpcio-tools, decoding with Apache's avro package: GetTopic,
GetSchema, Subscribe from EARLIEST. One JSON object per line ({"step": ...}); tests/interop.rs
asserts them. Settings from the environment: SF_LOGIN_URL, SF_PUBSUB (host:port), SF_CLIENT_ID,
SF_CLIENT_SECRET, SF_CA (the test CA), PROTO (the proto file), OUT (a scratch directory).
"""

import io
import json
import os
import subprocess
import sys

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
    one = sf.Account.create({"Name": "Py One", "NumberOfEmployees": 7})
    two = sf.Account.create({"Name": "Py Two"})
    out("create", ids=[one["id"], two["id"]], success=[one["success"], two["success"]])
    first = sf.Account.upsert("External_Id__c/PY-1", {"Name": "Py Ext"})
    second = sf.Account.upsert("External_Id__c/PY-1", {"Name": "Py Ext 2"})
    out("upsert", statuses=[first, second])
    result = sf.query_all("SELECT Id, Name FROM Account")
    out("query_all", totalSize=result["totalSize"], fetched=len(result["records"]))
    record = sf.Account.get(one["id"])
    out("get", Name=record["Name"], NumberOfEmployees=record["NumberOfEmployees"])
    describe = sf.Account.describe()
    out("describe", name=describe["name"], externalIds=sorted(f["name"] for f in describe["fields"] if f["externalId"]))
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


def subscribe(session, count):
    import avro.io
    import avro.schema
    import grpc

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

    def requests_():
        yield pb.FetchRequest(topic_name=topic.topic_name, replay_preset=pb.ReplayPreset.EARLIEST, num_requested=count)

    events = []
    for response in stub.Subscribe(requests_(), metadata=metadata):
        for consumer in response.events:
            reader = avro.io.DatumReader(schema(consumer.event.schema_id))
            body = reader.read(avro.io.BinaryDecoder(io.BytesIO(consumer.event.payload)))
            header = body["ChangeEventHeader"]
            events.append({
                "replayId": consumer.replay_id.hex(),
                "schemaId": consumer.event.schema_id,
                "changeType": header["changeType"],
                "recordIds": header["recordIds"],
                "commitTimestamp": header["commitTimestamp"],
                "transactionKey": header["transactionKey"],
                "Name": body.get("Name"),
                "NumberOfEmployees": body.get("NumberOfEmployees"),
            })
        if len(events) >= count:
            break
    out("subscribe", topicSchemaId=topic.schema_id, events=events)
    channel.close()


def main():
    session = token()
    out("token", instance_url=session["instance_url"])
    rest(session)
    subscribe(session, 5)
    out("done")


if __name__ == "__main__":
    try:
        main()
    except Exception as error:  # the test prints stderr; this line names the step that failed
        out("failed", message=repr(error))
        raise
