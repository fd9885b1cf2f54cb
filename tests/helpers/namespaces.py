"""Hosts that share nothing but a network, made of Linux namespaces on this machine.

A host is one init process in its own network, mount, UTS and PID namespaces (``unshare``):
its own hostname and address on a private bridge, and a file system on which everything this
machine has is read-only (the checkout, the virtualenv and its Python, like a node's image)
while ``/tmp``, the home folder, ``/srv`` (the work and scratch folders) and ``/dev/shm`` are
tmpfs of its own. Commands run on a host through ``nsenter``.

Nothing outlives the test. The init is PID 1 of its host: when it exits, the kernel kills
every process on the host, and the host's namespaces and network links go with the last of
them. It exits when its stdin closes: when the test stops the host, or when the test process
dies, however it dies.

The bridge lives in a namespace of its own, the switch. This machine joins it through one
veth whose address, the gateway, is where the hosts find what they may reach outside
themselves (the S3 server). The hosts have no default route: no address beyond the bridge and
their own loopback is reachable from them.
"""

from __future__ import annotations

import ipaddress
import os
import random
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from helpers.paths import REPO

# 10.213.<n>.0/24, one per network; <n> also names the gateway's link on this machine.
SUBNETS = "10.213.{}.0/24"
PRIVATE_FOLDERS = ("/tmp", "/srv", "/dev/shm")
TOOLS = ("unshare", "nsenter", "ip")
UNSHARE = ["unshare", "--net", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
           "--propagation", "private", "--kill-child"]  # fmt: skip

# The host's init, run by sh as PID 1: $1 hostname, $2 /etc/hosts, $3 the home folder, then
# the folders under home the image needs (this Python, say), which stay visible read-only.
INIT = r"""
set -eu
name=$1 hosts=$2 home=$3
shift 3
hostname "$name"
for mount in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
    case $mount in /proc|/proc/*) ;; *) mount -n -o remount,bind,ro "$mount" ;; esac
done
mount -n -t tmpfs -o mode=0755 tmpfs /srv
for keep; do mkdir -p "/srv/keep$keep" && mount -n --rbind "$keep" "/srv/keep$keep"; done
mount -n -t tmpfs -o mode=0700 tmpfs "$home"
for keep; do mkdir -p "$keep" && mount -n --move "/srv/keep$keep" "$keep"; done
rm -rf /srv/keep
mount -n -t tmpfs -o mode=1777 tmpfs /tmp
mount -n -t tmpfs -o mode=1777 tmpfs /dev/shm
mkdir /srv/etc && printf '%s' "$hosts" > /srv/etc/hosts && mount -n --bind /srv/etc/hosts /etc/hosts
echo ready
read -r _ || :
"""


def unavailable() -> str | None:
    """Why hosts cannot be made here (the reason a test is skipped for), or None."""
    if os.geteuid() != 0:
        return "namespace hosts need root (unshare, mounts, veth links)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"namespace hosts need {', '.join(missing)} (util-linux, iproute2)"
    probe = subprocess.run(
        [*UNSHARE, "sh", "-c", "mount -n -t tmpfs tmpfs /srv && ip link add br0 type bridge "
         "&& ip link add eth0 type veth peer name eth1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"cannot make namespaces, a bridge and veth links here: {probe.stderr.strip()}"
    return None


def home() -> Path:
    return Path.home()


def image_under_home() -> list[str]:
    """The folders under home the hosts need from this machine: the checkout, the virtualenv
    and the Python it was made from (pyenv keeps them in home)."""
    needed = {REPO, Path(sys.prefix), Path(sys.base_prefix)}
    return sorted({str(p.resolve()) for p in needed if p.resolve().is_relative_to(home())})


@dataclass
class Host:
    """One host: an init process, PID 1 of the host's namespaces, until its stdin closes."""

    name: str
    address: str | None  # None for the switch, which only holds the bridge
    init: subprocess.Popen  # ``unshare``; its one child is the host's PID 1

    @classmethod
    def boot(cls, name: str, address: str | None, hosts: str, timeout: float = 30) -> Host:
        init = subprocess.Popen(
            [*UNSHARE, "sh", "-c", INIT, "init", name, hosts, str(home()), *image_under_home()],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        host = cls(name, address, init)
        ready, _, _ = select.select([init.stdout], [], [], timeout)
        if not ready or init.stdout.readline() != b"ready\n":
            host.stop()
            raise RuntimeError(f"host {name} did not start: {init.stderr.read().decode()}")
        return host

    @property
    def pid(self) -> int:
        """The host's PID 1, as this machine numbers it."""
        [child] = psutil.Process(self.init.pid).children()
        return child.pid

    def enter(self, *namespaces: str, wd: str | None = None) -> list[str]:
        """The ``nsenter`` prefix that runs a command on this host (in every namespace unless
        ``namespaces`` names some), in ``wd``, else in the home folder as a login would."""
        chosen = namespaces or ("net", "mount", "uts", "pid")
        return ["nsenter", f"--target={self.pid}", *(f"--{n}" for n in chosen),
                f"--wd={wd or home()}", "--"]  # fmt: skip

    def popen(self, argv: Sequence[str], cwd: str | None = None, **kwargs) -> subprocess.Popen:
        """Start ``argv`` on the host, in ``cwd`` there (the home folder by default)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen([*self.enter(wd=cwd), *argv], **kwargs)

    def run(self, argv: Sequence[str], cwd: str | None = None,
            **kwargs) -> subprocess.CompletedProcess:  # fmt: skip
        """Run ``argv`` on the host, in ``cwd`` there; its output captured as text unless
        ``stdout`` says otherwise."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        if "stdout" not in kwargs:
            kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 600)
        return subprocess.run([*self.enter(wd=cwd), *argv], **kwargs)

    def ip(self, *args: str) -> None:
        """``ip`` in the host's network namespace."""
        ip(*args, enter=self.enter("net"))

    def path(self, path: str) -> Path:
        """The host's file at ``path``, as this machine reaches it (to put a file there)."""
        return Path(f"/proc/{self.pid}/root") / path.lstrip("/")

    def processes(self) -> list[psutil.Process]:
        """Every process on the host (in its PID namespace), PID 1 included; each with its
        ``name`` and ``cmdline`` in ``info``, read once."""
        namespace = os.stat(f"/proc/{self.pid}/ns/pid").st_ino
        return [p for p in psutil.process_iter(["name", "cmdline"])
                if namespace_of(p.pid, "pid") == namespace]  # fmt: skip

    def network_namespace(self) -> int:
        return os.stat(f"/proc/{self.pid}/ns/net").st_ino

    def stop(self, timeout: float = 30) -> None:
        """End the init, which ends every process on the host."""
        if self.init.stdin:
            self.init.stdin.close()
        try:
            self.init.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.init.kill()  # --kill-child: the host's PID 1 gets SIGKILL too
            self.init.wait()


def namespace_of(pid: int, kind: str) -> int | None:
    """The inode of process ``pid``'s ``kind`` namespace; None when it is gone or not ours to
    see."""
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def ip(*args: str, enter: Sequence[str] = ()) -> None:
    done = subprocess.run([*enter, "ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network or address this machine routes, in any table."""
    routes = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    found = []
    for token in routes.split():
        try:
            found.append(ipaddress.IPv4Network(token, strict=False))
        except ValueError:
            continue
    return found


def free_subnets() -> Iterable[ipaddress.IPv4Network]:
    """Candidate subnets that overlap nothing this machine routes, in a random order (two
    test processes choose at once: each tries its own order)."""
    used = used_networks()
    for n in random.Random(os.getpid()).sample(range(256), 256):
        subnet = ipaddress.IPv4Network(SUBNETS.format(n))
        if not any(subnet.overlaps(other) for other in used):
            yield subnet


@dataclass
class Network:
    """Hosts on one bridge, and the gateway that joins this machine to it."""

    switch: Host
    subnet: ipaddress.IPv4Network | None = None
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: set[int] = field(default_factory=set)  # network namespaces, by inode

    @classmethod
    def create(cls, names: Sequence[str]) -> Network:
        """Hosts named ``names``, wired to the bridge; on any failure nothing is left."""
        network = cls(Host.boot("switch", None, hosts=""))
        network.namespaces.add(network.switch.network_namespace())
        try:
            network._claim_subnet()
            hosts_file = network.hosts_file(names)
            for name, address in network.addresses(names).items():
                host = network.hosts[name] = Host.boot(name, address, hosts_file)
                network.namespaces.add(host.network_namespace())
                network._plug(host)
        except BaseException:
            network.stop()
            raise
        return network

    @property
    def gateway(self) -> str:
        """This machine's address on the bridge."""
        return str(self.subnet[1])

    @property
    def gateway_link(self) -> str:
        """The veth that joins this machine to the bridge (unique per subnet)."""
        return f"nsgw-{self.subnet.network_address.packed[2]}"

    def addresses(self, names: Sequence[str]) -> dict[str, str]:
        return {name: str(self.subnet[10 + i]) for i, name in enumerate(names)}

    def hosts_file(self, names: Sequence[str]) -> str:
        """Every host's /etc/hosts: the hosts and the gateway by name, nothing else."""
        entries = {"127.0.0.1": "localhost", self.gateway: "gateway"}
        entries.update({address: name for name, address in self.addresses(names).items()})
        return "".join(f"{address} {name}\n" for address, name in entries.items())

    def stop(self) -> None:
        """Stop every host, then the switch; wait until the kernel has removed the gateway's
        link with the switch's namespace."""
        for host in [*self.hosts.values(), self.switch]:
            host.stop()
        deadline = time.monotonic() + 30
        while self.subnet and link_exists(self.gateway_link):
            if time.monotonic() > deadline:
                ip("link", "delete", self.gateway_link)
            time.sleep(0.05)

    def leftovers(self) -> list[str]:
        """What is left of the network on this machine: processes in its namespaces, and the
        gateway's link."""
        return leftovers(self.namespaces, [self.gateway_link] if self.subnet else [])

    def _claim_subnet(self) -> None:
        """The bridge, and the first free subnet whose gateway link could be made (made with
        its peer in the switch, so the link goes when the switch does)."""
        self.switch.ip("link", "add", "br0", "type", "bridge")
        self.switch.ip("link", "set", "dev", "br0", "up")
        for subnet in free_subnets():
            self.subnet = subnet
            try:
                ip("link", "add", "name", self.gateway_link, "type", "veth",
                   "peer", "name", "gateway", "netns", str(self.switch.pid))  # fmt: skip
            except RuntimeError as error:
                if "File exists" in str(error):  # another network's link: subnet taken
                    continue
                raise
            ip("address", "add", f"{self.gateway}/{subnet.prefixlen}", "dev", self.gateway_link)
            ip("link", "set", "dev", self.gateway_link, "up")
            self.switch.ip("link", "set", "dev", "gateway", "master", "br0", "up")
            return
        self.subnet = None
        raise RuntimeError("no free 10.213.x.0/24 subnet for the hosts' bridge")

    def _plug(self, host: Host) -> None:
        """A veth from the host's eth0 to a bridge port named after the host."""
        ip("link", "add", "name", "eth0", "netns", str(host.pid), "type", "veth",
           "peer", "name", host.name, "netns", str(self.switch.pid))  # fmt: skip
        self.switch.ip("link", "set", "dev", host.name, "master", "br0", "up")
        host.ip("address", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", "eth0")
        host.ip("link", "set", "dev", "eth0", "up")
        host.ip("link", "set", "dev", "lo", "up")


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", "dev", name], capture_output=True).returncode == 0


def leftovers(network_namespaces: set[int], links: Sequence[str]) -> list[str]:
    """Processes still in any of ``network_namespaces``, and ``links`` still on this machine."""
    found = [f"link {link}" for link in links if link_exists(link)]
    found += [f"process {process.pid} ({process.info['name']})"
              for process in psutil.process_iter(["name"])
              if namespace_of(process.pid, "net") in network_namespaces]  # fmt: skip
    return found
