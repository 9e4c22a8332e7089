"""``envcal mqtt acl``: Mosquitto ACL, password file and config snippet from the registry."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    mqtt_app = typer.Typer(no_args_is_help=True, help="MQTT broker security (Mosquitto).")
    app.add_typer(mqtt_app, name="mqtt")

    @mqtt_app.command("acl")
    def mqtt_acl(
        stations: str | None = typer.Option(None, "--stations", help="Registry TOML file or folder."),
        out: Path = typer.Option(..., "--out", help="Folder for acl, passwd and mosquitto.conf."),
        secrets: Path | None = typer.Option(None, "--secrets",
                                            help="USER=PASSWORD file; missing accounts get generated "
                                            "passwords appended (mode 0600). Default: OUT/secrets.env"),
        service_user: str = typer.Option("envcal", "--service-user", help="envcal's own MQTT account."),
        reader: list[str] = typer.Option(None, "--reader",
                                         help="Account that may only subscribe to alerts and results "
                                         "(its password must be in --secrets)."),
        worker: list[str] = typer.Option(None, "--worker",
                                         help="Extra service account for one more ingest worker of a "
                                         "group (same rights as --service-user; the broker binds the "
                                         "client id to the account, so each worker needs its own)."),
        gateway: list[str] = typer.Option(None, "--gateway",
                                          help="Account of an HJ 212 gateway (publishes hj212 and status "
                                          "for the stations' analyzers, uses envcal/gateway/#)."),
        tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Server certificate (PEM): "
                                             "adds a TLS listener."),
        tls_key: Path | None = typer.Option(None, "--tls-key", help="Server private key (PEM)."),
        tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate (PEM)."),
        tls_port: int = typer.Option(8883, "--tls-port", help="TLS listener port."),
    ) -> None:
        """Write the broker's access control for the registry: each station publishes only on
        envcal/{station}/+/{data,hj212,check,status}, envcal alone publishes alerts and results,
        client ids are bound to accounts. Passwords are never printed."""
        from envcal.config import setting
        from envcal.mqtt_security import SecurityConfigError, TlsFiles, write_broker_security
        from envcal.registry import RegistryError, load_registry

        try:
            reg = load_registry(setting("stations", stations))
        except RegistryError as exc:
            typer.echo(f"registry: {exc}", err=True)
            raise typer.Exit(2) from None
        tls = None
        if tls_cert or tls_key:
            if not (tls_cert and tls_key):
                typer.echo("--tls-cert and --tls-key go together", err=True)
                raise typer.Exit(2)
            for p in (tls_cert, tls_key, tls_ca):
                if p is not None and not p.is_file():
                    typer.echo(f"{p}: no such file", err=True)
                    raise typer.Exit(2)
            tls = TlsFiles(tls_cert, tls_key, tls_ca)
        try:
            files = write_broker_security(reg, out, secrets_path=secrets, service_user=service_user,
                                          readers=tuple(reader or ()), tls=tls, tls_port=tls_port,
                                          workers=tuple(worker or ()), gateways=tuple(gateway or ()))
        except (SecurityConfigError, OSError) as exc:
            typer.echo(f"mqtt acl: {exc}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"wrote {files.acl}, {files.passwd}, {files.conf} for {len(files.users)} accounts "
                   f"({len(reg.stations)} stations + {service_user}"
                   + (f" + {len(worker)} workers" if worker else "")
                   + (f" + {len(gateway)} gateways" if gateway else "")
                   + (f" + {len(reader)} readers" if reader else "") + ")")
        if files.generated:
            typer.echo(f"generated passwords for {len(files.generated)} accounts into {files.secrets} "
                       "(not shown; give each station its line)")
        typer.echo(f"include it: add `include_dir` or append {files.conf} to your mosquitto.conf")
