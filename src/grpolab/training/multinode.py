"""Several machines: the world of a run and its checks before ``accelerate launch``.

accelerate counts ``--num_processes`` over the whole world (all machines), so 2 machines x 8 GPUs is
``--num_machines 2 --num_processes 16``. Each check here is one line naming the flag and the fix; none
of them contacts another host: rank 0 only binds the rendezvous port on its own address.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass

from grpolab.errors import UserError

DEFAULT_PORT = 29500
LAUNCH_FLAGS = ("num_machines", "machine_rank", "main_process_ip", "main_process_port")


@dataclass(frozen=True)
class World:
    machines: int
    processes: int  # over all machines, as accelerate counts them
    rank: int
    ip: str | None
    port: int

    @property
    def per_machine(self) -> int:
        return self.processes // self.machines


def config_processes(accelerate_config: str | None) -> int:
    """num_processes of an accelerate config (1 without one)."""
    if not accelerate_config:
        return 1
    import yaml

    from grpolab.training.distributed import accelerate_config_path

    try:
        data = yaml.safe_load(accelerate_config_path(accelerate_config).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return 1
    return int(data.get("num_processes") or 1) if isinstance(data, dict) else 1


def world_of(train_args) -> World:
    """The run's world from the flags (or recipe keys), checked; no network."""
    machines = train_args.num_machines if train_args.num_machines is not None else 1
    rank = train_args.machine_rank if train_args.machine_rank is not None else 0
    port = train_args.main_process_port if train_args.main_process_port is not None else DEFAULT_PORT
    processes = train_args.num_processes or config_processes(train_args.accelerate_config)
    if machines < 1:
        raise UserError(f"--num_machines {machines}: give 1 or more machines")
    if machines > 1 and not train_args.accelerate_config:
        raise UserError(f"--num_machines {machines} needs --accelerate_config (ddp, zero2, zero3, cpu2 or a "
                        "YAML path): several machines run under accelerate launch")
    if not 0 <= rank < machines:
        raise UserError(f"--machine_rank {rank} is out of range for --num_machines {machines}: give 0 .. "
                        f"{machines - 1} (0 on the head node)")
    if processes < machines or processes % machines:
        raise UserError(f"--num_processes {processes} (all machines together, as accelerate counts) does not "
                        f"split evenly over --num_machines {machines}: give a multiple of {machines}")
    if not 1 <= port <= 65535:
        raise UserError(f"--main_process_port {port} is not a port: give 1 .. 65535 "
                        f"(default {DEFAULT_PORT})")
    ip = train_args.main_process_ip
    if machines > 1 and not ip:
        raise UserError(f"--num_machines {machines} needs --main_process_ip: the head node's (machine "
                        "rank 0) address, the same on every machine")
    if ip:
        check_address(ip)
    return World(machines, processes, rank, ip, port)


def check_address(ip: str) -> None:
    """An IP address, or a host name that resolves here (resolving is not probing the host)."""
    try:
        ipaddress.ip_address(ip)
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(ip, None)
    except (socket.gaierror, UnicodeError):
        raise UserError(f"--main_process_ip {ip} is neither an IP address nor a host name this machine can "
                        "resolve: give the head node's address") from None


def check_port_free(world: World) -> None:
    """On the head node (rank 0) the rendezvous port must be free on its own address: bind it and let go."""
    if world.machines == 1 or world.rank != 0:
        return
    family = socket.AF_INET6 if ":" in (world.ip or "") else socket.AF_INET
    host = world.ip or ""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, world.port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"--main_process_port {world.port} is already taken on {host}: free it or "
                                "give another port (the same on every machine)") from None
            if error.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--main_process_ip {host} is not an address of this machine, and "
                                "machine rank 0 is the head node: run rank 0 on that host, or give this "
                                "machine's address") from None
            raise UserError(f"--main_process_port {world.port} on {host} cannot be bound ({error.strerror}): "
                            "give another port") from None


def check_batch(world: World, trainer_config, command: str = "train") -> list[str]:
    """The batch arithmetic over the whole world; GRPO needs each generation batch to hold whole groups."""
    per_device = trainer_config.per_device_train_batch_size
    accumulation = trainer_config.gradient_accumulation_steps
    total = per_device * accumulation * world.processes
    where = f"{world.machines} machine(s) x {world.per_machine} process(es) = {world.processes} process(es)"
    head = f", head {world.ip}:{world.port}" if world.ip else ""
    lines = [f"world            {where}; this is machine rank {world.rank}{head}"]
    unit = "completions" if command == "train" else "replies"
    arithmetic = (f"world batch      {per_device}/device x {accumulation} accumulation x {world.processes} "
                  f"process(es) = {total} {unit} per optimiser step")
    if command == "train":
        generations = trainer_config.num_generations
        steps_per_generation = getattr(trainer_config, "steps_per_generation", None) or accumulation
        generation_batch = per_device * world.processes * steps_per_generation
        if generation_batch % generations:
            raise UserError(
                f"batch {per_device}/device x {world.processes} process(es) x {steps_per_generation} "
                f"step(s) per generation = {generation_batch} completions, which is not a multiple of "
                f"num_generations {generations}: change per_device_train_batch_size, num_processes or "
                "num_generations")
        prompts = generation_batch // generations
        arithmetic += (f"; {generation_batch} / {generations} generations = {prompts} prompts per "
                       "generation batch")
    return [*lines, arithmetic]


def check_world(train_args, trainer_config, command: str = "train", bind: bool = True) -> list[str]:
    """Every multi-node check; plan lines. Only runs when the run is multi-process or multi-machine."""
    world = world_of(train_args)
    lines = check_batch(world, trainer_config, command)
    if bind:
        check_port_free(world)
    return lines


def launch_flags(train_args) -> list[str]:
    """accelerate launch's multi-machine flags, only those given (the config supplies the rest)."""
    out: list[str] = []
    for name in LAUNCH_FLAGS:
        value = getattr(train_args, name)
        if value is not None:
            out += [f"--{name}", str(value)]
    return out
