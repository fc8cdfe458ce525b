"""Black-box check of the handshake service's gRPC surface with Python's grpcio.

Usage: grpc_check.py HOST:PORT SERVICE_CREDENTIAL

Lists services by server reflection (v1alpha, the only version grpcio-reflection speaks),
builds message classes from the descriptors reflection returns (no stubs generated from our
.proto), calls the standard health service, and calls the user directory and the handshake
service as an internal service (its bearer credential in the metadata), reading the
contract's error code from the rich error details; reflection and health need no credential,
the others refuse a call without one. Prints one line per
check and exits 1 if any fails.
"""

import sys

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status

failures = []


def check(name, condition, detail=""):
    print(("ok   " if condition else "FAIL ") + name + (f": {detail}" if detail and not condition else ""))
    if not condition:
        failures.append(name)


CREDENTIAL = None


def unary(channel, method, request, response_class, credential=True):
    call = channel.unary_unary(
        method,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    metadata = [("authorization", f"Bearer {CREDENTIAL}")] if credential else []
    return call(request, timeout=5, metadata=metadata)


def main():
    global CREDENTIAL
    address, CREDENTIAL = sys.argv[1], sys.argv[2]
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=10)

    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    for name in [
        "videochat.handshake.v1.Handshake",
        "videochat.handshake.v1.UserDirectory",
        "videochat.handshake.v1.GatewayLink",
        "grpc.health.v1.Health",
    ]:
        check(f"reflection lists {name}", name in services, sorted(services))

    pool = descriptor_pool.DescriptorPool(database)
    handshake = pool.FindServiceByName("videochat.handshake.v1.Handshake")
    methods = {m.name for m in handshake.methods}
    check("reflection describes Handshake's methods",
          {"RequestDirectVideochat", "Invite", "AcceptVideochatRequest", "DeclineVideochatRequest",
           "MergeToVideochat", "ListPendingRings"} <= methods, sorted(methods))

    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "videochat.handshake.v1.Handshake", "videochat.handshake.v1.UserDirectory",
                    "videochat.handshake.v1.GatewayLink"]:
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        check(f"health {service or '(server)'} is SERVING",
              status == health_pb2.HealthCheckResponse.SERVING, status)

    def message(name):
        return GetMessageClass(pool.FindMessageTypeByName(f"videochat.handshake.v1.{name}"))

    User = message("User")
    user = User(id="blackbox-user", first_name="Black", last_name="Box", privacy_mode=1,
                company_name="Outside")
    user.avatar_3d.asset_id = "asset-9"
    user.avatar_3d.asset_skins["hair"] = "green"
    user.avatar_3d.avatar_url = "https://models.example.test/b.glb"
    UpsertUserRequest, UpsertUserResponse = message("UpsertUserRequest"), message("UpsertUserResponse")
    unary(channel, "/videochat.handshake.v1.UserDirectory/UpsertUser", UpsertUserRequest(user=user),
          UpsertUserResponse)
    GetUserRequest, GetUserResponse = message("GetUserRequest"), message("GetUserResponse")
    try:
        unary(channel, "/videochat.handshake.v1.UserDirectory/GetUser",
              GetUserRequest(user_id="blackbox-user"), GetUserResponse, credential=False)
        check("a call without a credential is refused", False, "the call succeeded")
    except grpc.RpcError as error:
        check("a call without a credential is UNAUTHENTICATED",
              error.code() == grpc.StatusCode.UNAUTHENTICATED, error.code())
    fetched = unary(channel, "/videochat.handshake.v1.UserDirectory/GetUser",
                    GetUserRequest(user_id="blackbox-user"), GetUserResponse)
    check("UpsertUser then GetUser round-trips the profile", fetched.user == user, fetched.user)
    check("GetUser says the user has no socket", fetched.available is False)

    Request = message("RequestDirectVideochatRequest")
    Response = message("RequestDirectVideochatResponse")
    request = Request(target_user="nobody-xyz")
    request.actor.user_id = "blackbox-user"
    request.actor.idempotency_key = "k1"
    try:
        unary(channel, "/videochat.handshake.v1.Handshake/RequestDirectVideochat", request, Response)
        check("calling an unknown user fails", False, "the call succeeded")
    except grpc.RpcError as error:
        check("calling an unknown user is NOT_FOUND", error.code() == grpc.StatusCode.NOT_FOUND, error.code())
        status = rpc_status.from_call(error)
        infos = []
        for detail in status.details if status else []:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                infos.append(info)
        check("the status carries an ErrorInfo", len(infos) == 1, status)
        if infos:
            check("ErrorInfo.domain", infos[0].domain == "videochat.handshake.v1", infos[0].domain)
            check("ErrorInfo code 1021", infos[0].metadata.get("code") == "1021", dict(infos[0].metadata))

    print(f"{len(failures)} failed checks")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
