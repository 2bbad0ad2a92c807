"""Ansible vars plugin: gives the hosts of a site the catalogue and the site, as data.

When an inventory file sits in a site folder (site.yml beside hosts.yml), every host in
group `telecentre` receives:
  tc_site            site.yml with defaults filled (telecentre_ctl.site.Site.as_data)
  tc_catalog         the whole catalogue: {service: entry}
  tc_layout          where things live on a host (telecentre_ctl.compose.layout)
  tc_secrets         secrets.yml, decrypted with the vault password Ansible was given
  tc_site_placement  every host's services: {host: [services]} (what runs elsewhere)
and each host its own:
  tc_host_services   what the host runs (dependencies, apps, proxy)
  tc_firewall_ports  [{port, protocol}] to open: 22, 80, 443, the site's and the services'
The site is validated exactly as `telecentre-ctl validate` does; a broken site stops the
run before any task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.vars import BaseVarsPlugin

from telecentre_ctl.compose import layout
from telecentre_ctl.errors import InvalidInput
from telecentre_ctl.site import Site, load_site

DOCUMENTATION = """
    name: telecentre
    short_description: telecentre-ctl site and catalogue for the hosts of a site folder
    description: Loads site.yml, the service catalogue and secrets.yml beside the inventory.
    options:
      stage:
        ini:
          - key: stage
            section: vars_telecentre
        env:
          - name: ANSIBLE_VARS_PLUGIN_STAGE
"""

GROUP = "telecentre"


class VarsModule(BaseVarsPlugin):  # type: ignore[misc]
    REQUIRES_ENABLED = True
    # Ansible asks once per host and group; the site is read once per run.
    _sites: ClassVar[dict[str, tuple[Site, dict[str, Any]]]] = {}

    def _site(self, loader: Any, path: str) -> tuple[Site, dict[str, Any]] | None:
        site_dir = Path(path)
        if not ((site_dir / "site.yml").is_file() and (site_dir / "hosts.yml").is_file()):
            return None
        key = str(site_dir.resolve())
        if key not in self._sites:
            try:
                site = load_site(site_dir, check_secrets=False)
            except InvalidInput as err:
                raise AnsibleParserError(f"telecentre-ctl: {err}") from err
            common: dict[str, Any] = {
                "tc_site": site.as_data(),
                "tc_catalog": site.catalog.as_data(),
                "tc_layout": layout(),
                "tc_site_placement": site.placement(),
            }
            secrets_file = site_dir / "secrets.yml"
            if secrets_file.is_file():
                try:
                    data = loader.load_from_file(str(secrets_file), unsafe=True)
                    common["tc_secrets"] = (data or {}).get("tc_secrets", {})
                except AnsibleError:
                    self._display.warning(
                        f"{secrets_file} was not decrypted: pass --vault-password-file "
                        f"(see telecentre-ctl secrets {site_dir})"
                    )
            self._sites[key] = (site, common)
        return self._sites[key]

    def get_vars(self, loader: Any, path: str, entities: Any, cache: bool = True) -> dict[str, Any]:
        super().get_vars(loader, path, entities)
        found = self._site(loader, path)
        if found is None:
            return {}
        site, common = found
        placement = site.placement()
        data: dict[str, Any] = {}
        for entity in entities if isinstance(entities, list) else [entities]:
            if entity.name == GROUP:
                data |= common
            elif entity.name in placement:
                data |= {
                    "tc_host_services": placement[entity.name],
                    "tc_firewall_ports": site.firewall_ports(entity.name),
                }
        return data
