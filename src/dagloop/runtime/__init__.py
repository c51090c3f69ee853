"""Runtime shared by the engine and the Dagster executor: sync/async bridges, worker
threads, limiters and tracing. Nothing here imports dagster."""
