"""ACKs that a consumer sends together (one write, no receipts): each takes its own message at
once, a repeated one is refused in its place in the stream, and their removals reach the store
(a restart does not bring the acked messages back), the last of a read too."""

from pybrokerd.protocols.stomp.codec import serialize
from support import BrokerProcess, RawStomp, unique


def _frames(*frames):
    return b"".join(serialize(command, headers, b"", "1.2") for command, headers in frames)


def test_acks_sent_together_each_take_their_message_and_a_repeat_is_refused(tmp_path):
    broker = BrokerProcess(directory=str(tmp_path)).start()
    try:
        dest = "/queue/" + unique("acks")
        producer = RawStomp(broker.port)
        producer.connect()
        for n in range(6):
            producer.send("SEND", {"destination": dest, "persistent": "true", "n": str(n)}, b"m")
        assert producer.receipt("SEND", {"destination": dest, "persistent": "true",
                                         "n": "6"}, b"m").command == "RECEIPT"
        consumer = RawStomp(broker.port)
        consumer.connect()
        consumer.receipt("SUBSCRIBE", {"destination": dest, "id": "1",
                                       "ack": "client-individual"})
        got = [consumer.recv_command("MESSAGE") for _ in range(7)]
        assert [m.headers["n"] for m in got] == [str(n) for n in range(7)]
        ids = [m.headers["ack"] for m in got]
        other = "/queue/" + unique("other")
        consumer.send_raw(_frames(("ACK", {"id": ids[0]}), ("ACK", {"id": ids[1]}),
                                  ("ACK", {"id": ids[1]}), ("ACK", {"id": ids[2]}),
                                  ("SEND", {"destination": other, "receipt": "s"})))
        refused = consumer.recv()
        assert refused.command == "ERROR" and "receipt-id" not in refused.headers
        assert "Unexpected ACK" in refused.headers["message"]
        assert consumer.recv().headers.get("receipt-id") == "s"  # after the ERROR, in order
        # the connection is still usable, and an ACK with a receipt is answered
        assert consumer.receipt("ACK", {"id": ids[3]}).command == "RECEIPT"
        # ACKs that end a read count too: the last thing this consumer does is an ACK
        consumer.send_raw(_frames(("ACK", {"id": ids[4]})))
        consumer.close()
        second = RawStomp(broker.port)
        second.connect()
        second.send("SUBSCRIBE", {"destination": dest, "id": "1", "ack": "client"})
        back = [second.recv_command("MESSAGE") for _ in range(2)]  # the closed one's, again
        assert [m.headers["n"] for m in back] == ["5", "6"]
        assert all(m.headers.get("redelivered") == "true" for m in back)
        # a synced write now comes after every removal before it
        assert second.receipt("SEND", {"destination": other, "persistent": "true"},
                              b"sync").command == "RECEIPT"
        broker.kill()
        broker = broker.restarted().start()
        again = RawStomp(broker.port)
        again.connect()
        again.send("SUBSCRIBE", {"destination": dest, "id": "1"})
        assert [f.headers["n"] for f in again.until_quiet()] == ["5", "6"]
    finally:
        broker.stop()
