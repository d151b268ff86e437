"""The local Dapr-API stand-in and its component drivers.

One stand-in process serves every async function of a kernel on the local target: it speaks
the Dapr API the unmodified Dapr Python SDK expects (gRPC plus the HTTP health probe), connects
to real brokers through its drivers, delivers input events to each function's AppCallback at
least once, and records every output event so the notebook can show it.
"""
