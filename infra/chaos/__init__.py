"""`img2img chaos`: fault-injection scenarios on the local stack, with real processes, and the
fault-injecting proxy in front of moto."""
