"""Whether a TCP port is free for a job's rendezvous, checked on the host that will listen on it.

    python -I port_free.py PORT

Prints nothing; exits 3 when PORT is taken (by a process that is not one of our jobs: the policy
never gives two of ours one port on a host), else 0. It binds as torchrun's c10d store will: every
address, IPv6 dual-stack where the host has it, else IPv4, with SO_REUSEADDR (so a port in TIME_WAIT
counts as free). Any other failure exits 0: torchrun will report it better. start.sh runs it on the
rendezvous node with -I, so that a socket.py in the login directory cannot stand in for the module.
"""

import errno
import socket
import sys

TAKEN = 3


def taken(port: int) -> bool:
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
        try:
            socket.create_server((host, port), family=family, dualstack_ipv6=family == socket.AF_INET6).close()
            return False
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
        except ValueError:  # no dual-stack here
            pass
    return False


def main(argv=None) -> int:
    (port,) = sys.argv[1:] if argv is None else argv
    return TAKEN if taken(int(port)) else 0


if __name__ == "__main__":
    sys.exit(main())
