"""Runtime shared by the engine and the Dagster executor: the bridge that lets sync code
await on the loop, worker threads and their interrupts, driving a loop from a generator,
stream routing and tracing. Nothing here imports dagster."""
