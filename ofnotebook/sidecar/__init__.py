"""The local Dapr-API stand-in and its component drivers.

One stand-in process serves every async function of a kernel on the local target: it speaks
the Dapr API the unmodified Dapr Python SDK expects (gRPC plus the HTTP health probe), connects
to real brokers through its drivers, delivers input events to each function's AppCallback at
least once, and records every output event so the notebook can show it.

Modules, top down (each imports only those below it; none imports the kernel side):

* ``__main__``: the process: arguments, the two listeners, shutdown.
* ``server`` and ``httpapi``: the two faces, the gRPC ``Dapr`` servicer and the Flask HTTP
  app, as thin adapters over ``core``; ``unimplemented``: what answers the calls not served.
* ``core``: ``DaprCore``, one method per Dapr verb and per control verb.
* ``errors``: the stand-in's errors and the table of their gRPC codes and HTTP statuses.
* ``invoke``: service invocation between the apps of the kernel (HTTP or AppCallback).
* ``inject``: test events from the notebook into an input, through the broker.
* ``registry``: apps, their drivers and dispatchers; registration from the kernel's payload.
* ``metadata`` (and its data, ``metadata_keys``): component metadata as daprd reads it.
* ``delivery``: ``Dispatcher``, at-least-once delivery to AppCallback with retries, routes and
  dead-letter topics.
* ``apps``: ``App`` (AppCallback port, channels) and ``Endpoint`` (one component of an app).
* ``eventlog``: the numbered event log the kernel long-polls, and ``payload_view``.
* ``cloudevents``: daprd's CloudEvents envelope, byte for byte.
* ``golang``: Go's and dapr/kit's conventions (durations, booleans, JSON).
* ``protocol``: the wire protocol shared with the kernel (event kinds, payload keys, paths).
* ``drivers``: the registry of component types; ``drivers.base`` the driver contract.
"""
