"""The quickstart without magics: deploy a function from a script with ``ofnotebook.deploy``.

    python examples/quickstart.py
"""

from __future__ import annotations

import ofnotebook

MODEL_VERSION = "2026-11"


def polite(name: str) -> str:
    return f"hello {name}"


def greet(request):  # type: ignore[no-untyped-def]
    name = request.args.get("name", "world")
    return {"greeting": polite(name), "model": MODEL_VERSION}


def main() -> None:
    handle = ofnotebook.deploy(greet, runtime="sync", target="local")
    print(handle)
    print("invoke:", handle.invoke(params={"name": "ada"}).json())
    print(handle.capture.report())

    def divide(request):  # type: ignore[no-untyped-def]
        return {"result": 10 / int(request.args["by"])}

    divider = ofnotebook.deploy(divide, "divider")
    print("divide by 4:", divider.invoke(params={"by": 4}).json())
    try:
        divider.invoke(params={"by": 0})
    except ofnotebook.RemoteFunctionError as error:
        print("remote error:", error.ename, "-", error.evalue)
    print("stopped:", ofnotebook.stop(all=True))


if __name__ == "__main__":
    main()
