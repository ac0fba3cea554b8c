"""FastAPI dependency aliases: routes declare what they need, the lifespan supplies it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from dialgraph.server.core.db import Database
from dialgraph.server.core.settings import Settings
from dialgraph.server.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


def get_db(request: Request) -> Database:
    db: Database = request.app.state.services.db
    return db


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
