"""Two Chitty-Chat participants, written with Python's grpcio from the Chitty-Chat proto: join,
exchange messages, leave. Checks texts, order and that Lamport timestamps only grow; exits 1 with
the reason otherwise. Usage: participants.py HOST:PORT ROOM"""

import queue
import sys
import threading
import time

import grpc

import chitty_chat_pb2 as pb
import chitty_chat_pb2_grpc as rpc


class Participant:
    def __init__(self, channel, name, room):
        self.name = name
        self.clock = 0
        self.received = []
        self.outbox = queue.Queue()
        self.lock = threading.Lock()
        stub = rpc.ChatStub(channel)
        self.responses = stub.Broadcast(
            iter(self.outbox.get, None), metadata=[("x-chat-room", room)]
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for message in self.responses:
            with self.lock:
                self.clock = max(self.clock, message.timestamp) + 1
                self.received.append(message)

    def _send(self, **event):
        with self.lock:
            self.clock += 1
            clock = self.clock
        self.outbox.put(pb.ChatEvent(timestamp=clock, **event))

    def join(self):
        self._send(join=pb.ChatEvent.UserJoin(username=self.name))

    def say(self, text):
        self._send(message=pb.ChatEvent.ChatMessage(username=self.name, message=text))

    def leave(self):
        self._send(leave=pb.ChatEvent.UserLeave(username=self.name))
        self.outbox.put(None)
        self.reader.join(timeout=10)
        if self.reader.is_alive():
            fail(f"{self.name}'s stream did not end after leaving")

    def lines(self):
        with self.lock:
            return [f"{m.username}: {m.message}" for m in self.received]

    def wait_for(self, line):
        deadline = time.monotonic() + 10
        while line not in self.lines():
            if time.monotonic() > deadline:
                fail(f"{self.name} never received {line!r}; got {self.lines()}")
            time.sleep(0.01)


def fail(reason):
    print(f"FAIL: {reason}", flush=True)
    sys.exit(1)


def main():
    address, room = sys.argv[1], sys.argv[2]
    with grpc.insecure_channel(address) as channel:
        alice = Participant(channel, "alice", room)
        alice.join()
        alice.wait_for("SERVER: Participant alice joined Chitty-Chat")
        bob = Participant(channel, "bob", room)
        bob.join()
        bob.wait_for("SERVER: Participant bob joined Chitty-Chat")
        alice.say("hello bob")
        bob.wait_for("alice: hello bob")
        bob.say("hello alice")
        alice.wait_for("bob: hello alice")
        bob.leave()
        alice.wait_for("SERVER: Participant bob left Chitty-Chat")
        alice.leave()

    expected = {
        "alice": [
            "SERVER: Participant alice joined Chitty-Chat",
            "SERVER: Participant bob joined Chitty-Chat",
            "alice: hello bob",
            "bob: hello alice",
            "SERVER: Participant bob left Chitty-Chat",
        ],
        "bob": [
            "SERVER: Participant bob joined Chitty-Chat",
            "alice: hello bob",
            "bob: hello alice",
        ],
    }
    for participant in (alice, bob):
        if participant.lines() != expected[participant.name]:
            fail(f"{participant.name} received {participant.lines()}")
        stamps = [m.timestamp for m in participant.received]
        if any(later <= earlier for earlier, later in zip(stamps, stamps[1:])):
            fail(f"{participant.name}'s Lamport timestamps do not only grow: {stamps}")
    print("ok", flush=True)


if __name__ == "__main__":
    main()
