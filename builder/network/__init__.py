"""Container networking: ``bridge`` (veth, IPAM, NAT, published ports), ``host``, ``none``,
``container:<id>``, ``macvlan`` and ``overlay`` (multi-host: VXLAN, state in an etcd cluster,
see ``overlay`` and ``builder.network.cluster``) networks, with name resolution through hosts files.

The contract with ``sandbox`` and ``containers``
------------------------------------------------
* Records: ``<root>/networks/<id>.json`` (Docker's ``network inspect`` shape), written
  atomically (temp + rename) under ``StateRoot.lock("networks")``. ``bridge``, ``host`` and
  ``none`` are created on first use. A user-defined bridge network's Linux bridge and rules
  exist from ``create_network`` to ``remove_network``; the default ``bridge`` network's are made
  on the first attach and stay up, as ``docker0`` does (``remove_network`` refuses the
  predefined networks, as Docker). ``reset(state)`` removes everything a state root made,
  the default bridge and every record included (``system reset``; tests at teardown).
  Endpoints live in the record's ``Containers`` map, keyed
  by container id; each carries its netns path, interface, address, ports and proxy pid.
* ``attach(state, cid, net, name=, aliases=, ip=, hostname=, ports=) -> Endpoint`` makes the
  container's network namespace ``<root>/run/netns/<cid>`` (a bind-mounted nsfs file, like
  ``ip netns add``) on first use, with ``lo`` up; for ``bridge`` a veth pair (host end
  ``pbv<hash>`` in the bridge, container end ``eth0``, ``eth1``… in order of connection), an
  address from the network's subnet and the default route via the gateway (first network
  only); for ``macvlan`` a macvlan child of ``-o parent=IFACE``; for ``none`` just ``lo``; for
  ``host`` nothing (``Endpoint.netns is None``: the sandbox stays in the host namespace).
  The sandbox joins ``Endpoint.netns`` by path (``setns``); ``connect`` is the same call.
* ``--network container:<name>``: resolve the name, then ``shared_netns(state, other_id)``
  gives the path to join; reuse that container's hosts/resolv files.
* Published ports (``parse_publish``/``publish_exposed`` → ``PortMapping``; pass them to
  ``attach``): the host sockets are bound first (a used port fails before anything is made),
  then a DNAT rule for traffic from outside and a userland proxy process
  (``python -m builder.network.proxy``, started detached, pid in ``Endpoint.proxy_pid``) for
  connections to 127.0.0.1, as docker-proxy does.
* ``/etc/hosts`` and ``/etc/resolv.conf``: ``Endpoint.hosts_path`` / ``resolv_path``
  (``<root>/run/net/<cid>/``) are written by ``attach``; bind-mount them. Hosts files of every
  container on a network are rewritten in place (same inode) whenever one attaches or
  detaches, so peers on user-defined networks resolve each other by name, alias and short id
  (Docker's default ``bridge`` has no such resolution). A user-defined bridge network also
  runs an embedded DNS server on its gateway (``python -m builder.network.dns``, Docker's
  127.0.0.11 role: names, aliases, ``name.network``; the rest forwarded to the host's
  resolvers) while it has containers; their ``resolv.conf`` points at it.
  ``hosts_entries``/``resolv_conf`` return the same content.
* ``detach(state, cid, net)`` undoes one endpoint (the netns stays); ``release(state, cid)``
  undoes all of them and removes the netns file, its mount and the hosts files. Call it when
  a container is removed or its supervisor finds it dead.
* Netfilter: rules only in our chains (``PYBUILD-FORWARD``, ``PYBUILD-ISOLATION-1/2`` hooked
  from FORWARD; ``PYBUILD`` from nat PREROUTING/OUTPUT; ``PYBUILD-POSTROUTING``), each tagged
  ``pybuild:<net12>[:<cid12>]`` so removal is exact; hooks and chains go with the last rule.
  They work whatever the FORWARD policy (dockerd sets DROP); networks are isolated from each
  other; outbound traffic is masqueraded (not for ``--internal`` networks).
* Removed roots: bridges and host veths carry an alias naming their root (``sweep``);
  ``create_network`` and the first attach to the default bridge call ``sweep_roots()``, which
  takes off the host what roots that are gone left (links, rules, netns mounts, the
  containers' cgroups and helpers); ``sweep_roots(root=path)`` does it for one root, gone or
  not (``system reset``).

The package loads nothing on import: each public name below is imported from its module on
first use (PEP 562), so ``from builder.network.records import ...`` costs only that module.

* Read API for container code (``records``, light: no netlink, no ``core``):
  ``endpoints_by_container(state) -> {cid: {network name: EndpointRecord}}`` reads the
  records' ``Containers`` maps; ``mentions(state, cid)`` says whether any network state still
  names a container. ``EndpointRecord`` (a NamedTuple, ``from_json``/``to_json`` byte for byte)
  is what a container's ``state.json`` keeps of its endpoints; ``Endpoint.record()`` makes it.

Room ``builder.network`` owns container networks: bridge, host, none, macvlan, overlay (with its etcd ``cluster``), rootless networking (``rootless``: slirp4netns), name resolution, published ports, firewall rules.
May import: ``builder.base``, ``builder.core``, ``registry``, ``grammar`` (and anything inside ``builder.network``); never a room above.
"""

from __future__ import annotations

# not ``typing.TYPE_CHECKING``: importing typing would cost every ``builder.network.*`` import
TYPE_CHECKING = False

# public name -> "module:attribute"
_EXPORTS: dict[str, str] = {
    "attach": "builder.network.core:attach",
    "create_network": "builder.network.core:create_network",
    "detach": "builder.network.core:detach",
    "endpoints": "builder.network.core:endpoints",
    "filter_networks": "builder.network.core:filter_networks",
    "get_network": "builder.network.core:get_network",
    "hosts_entries": "builder.network.core:hosts_entries",
    "list_networks": "builder.network.core:list_networks",
    "netns_path": "builder.network.core:netns_path",
    "prune_networks": "builder.network.core:prune_networks",
    "release": "builder.network.core:release",
    "remove_network": "builder.network.core:remove_network",
    "reset": "builder.network.core:reset",
    "resolv_conf": "builder.network.core:resolv_conf",
    "shared_netns": "builder.network.core:shared_netns",
    "Endpoint": "builder.network.model:Endpoint",
    "Network": "builder.network.model:Network",
    "PortMapping": "builder.network.model:PortMapping",
    "parse_publish": "builder.network.model:parse_publish",
    "parse_publish_all": "builder.network.model:parse_publish_all",
    "publish_exposed": "builder.network.model:publish_exposed",
    "PortBinding": "builder.network.records:PortBinding",
    "EndpointRecord": "builder.network.records:EndpointRecord",
    "endpoints_by_container": "builder.network.records:endpoints_by_container",
    "mentions": "builder.network.records:mentions",
    "hosts_path": "builder.network.resolution:hosts_path",
    "resolv_path": "builder.network.resolution:resolv_path",
    "Swept": "builder.network.sweep:Swept",
    "sweep_roots": "builder.network.sweep:sweep",
}

__all__ = [
    "Endpoint",
    "EndpointRecord",
    "Network",
    "PortBinding",
    "PortMapping",
    "Swept",
    "attach",
    "create_network",
    "detach",
    "endpoints",
    "endpoints_by_container",
    "filter_networks",
    "get_network",
    "hosts_entries",
    "hosts_path",
    "list_networks",
    "mentions",
    "netns_path",
    "parse_publish",
    "parse_publish_all",
    "prune_networks",
    "publish_exposed",
    "release",
    "remove_network",
    "reset",
    "resolv_conf",
    "resolv_path",
    "shared_netns",
    "sweep_roots",
]

if TYPE_CHECKING:
    from builder.network.core import (
        attach,
        create_network,
        detach,
        endpoints,
        filter_networks,
        get_network,
        hosts_entries,
        list_networks,
        netns_path,
        prune_networks,
        release,
        remove_network,
        reset,
        resolv_conf,
        shared_netns,
    )
    from builder.network.model import (
        Endpoint,
        Network,
        PortMapping,
        parse_publish,
        parse_publish_all,
        publish_exposed,
    )
    from builder.network.records import (
        EndpointRecord,
        PortBinding,
        endpoints_by_container,
        mentions,
    )
    from builder.network.resolution import (
        hosts_path,
        resolv_path,
    )
    from builder.network.sweep import (
        Swept,
    )
    from builder.network.sweep import sweep as sweep_roots

if not TYPE_CHECKING:  # mypy would take any name, submodules too, as Any
    from registry.lazy import lazy_exports

    __getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
    del lazy_exports
