from eventproc import Event, HandlerContext, Registry


def make_registry() -> Registry:
    registry = Registry()

    @registry.handler("t.ok", description="Does nothing, successfully.")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        return None

    return registry
