#!/usr/bin/env python3
"""A minimal ivshmem server (QEMU's protocol, version 0) for qemu-pair.sh, since QEMU's own
`ivshmem-server` is not packaged everywhere. Usage: ivshmem-server.py SOCKET SHM-FILE SIZE VECTORS.
Each client gets: version 0, its peer ID, the shared-memory fd (-1), the other peers' eventfds,
then its own; the others get the newcomer's. Peers that leave are not announced (tests only)."""
import os, socket, struct, sys

path, shm_path, size, vectors = sys.argv[1], sys.argv[2], int(sys.argv[3], 0), int(sys.argv[4])
shm = os.open(shm_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
os.ftruncate(shm, size)
try:
    os.unlink(path)
except FileNotFoundError:
    pass
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(8)
peers = {}
next_id = 0

def send(conn, value, fd=None):
    data = struct.pack('<q', value)
    if fd is None:
        conn.sendall(data)
    else:
        socket.send_fds(conn, [data], [fd])

print("ivserver: listening", flush=True)
while True:
    conn, _ = server.accept()
    peer = next_id
    next_id += 1
    fds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(vectors)]
    send(conn, 0)
    send(conn, peer)
    send(conn, -1, shm)
    for other, (other_conn, other_fds) in peers.items():
        for fd in other_fds:
            send(conn, other, fd)
        for fd in fds:
            send(other_conn, peer, fd)
    for fd in fds:
        send(conn, peer, fd)
    peers[peer] = (conn, fds)
    print(f"ivserver: peer {peer} connected", flush=True)
