"""The few Label Studio API calls the bridge makes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

SECRET_HEADER = "X-Pickserve-Secret"
PAGE_SIZE = 100


class LabelStudio:
    """The few Label Studio API calls the bridge makes."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Token {token}"}
        )

    def pages(self, path: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            answer = self.http.get(path, params={**params, "page": page, "page_size": PAGE_SIZE})
            if answer.status_code == 404 and page > 1:
                return  # past the last page
            answer.raise_for_status()
            body = answer.json()
            rows = body if isinstance(body, list) else body.get(key, [])
            yield from rows
            if isinstance(body, list) or len(rows) < PAGE_SIZE:
                return
            page += 1

    def project(self, title: str, label_config: str) -> int:
        for project in self.pages("/api/projects/", "results"):
            if project["title"] == title:
                return int(project["id"])
        created = self.http.post(
            "/api/projects/", json={"title": title, "label_config": label_config}
        )
        created.raise_for_status()
        return int(created.json()["id"])

    def webhook(self, project: int, url: str, secret: str) -> None:
        body = {"project": project, "url": url, "send_payload": True, "send_for_all_actions": False,
                "actions": ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
                "headers": {SECRET_HEADER: secret}, "is_active": True}  # fmt: skip
        for hook in self.pages("/api/webhooks/", "results", project=project):
            if hook.get("url") == url and hook.get("project") == project:
                self.http.patch(f"/api/webhooks/{hook['id']}/", json=body).raise_for_status()
                return
        self.http.post("/api/webhooks/", json=body).raise_for_status()

    def tasks(self, project: int) -> Iterator[dict[str, Any]]:
        return self.pages("/api/tasks/", "tasks", project=project, fields="all")

    def import_task(self, project: int, task: dict[str, Any]) -> int:
        answer = self.http.post(
            f"/api/projects/{project}/import", params={"return_task_ids": "true"}, json=[task]
        )
        answer.raise_for_status()
        return int(answer.json()["task_ids"][0])

    def task(self, task_id: int) -> dict[str, Any] | None:
        """A task with its annotations; None when it is gone."""
        answer = self.http.get(f"/api/tasks/{task_id}/")
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        task: dict[str, Any] = answer.json()
        return task

    def set_overlap(self, task_id: int, overlap: int, made: int) -> bool:
        """How many annotations the task asks for, with `made` made: Label Studio hands it
        to annotators who have not annotated it while it is not labeled (it does not work
        that out again when the overlap changes: `is_labeled` is set with it). False when
        the task is gone."""
        body = {"overlap": overlap, "is_labeled": made >= overlap}
        answer = self.http.patch(f"/api/tasks/{task_id}/", json=body)
        if answer.status_code == 404:
            return False
        answer.raise_for_status()
        return True

    def user(self, user_id: int) -> dict[str, Any] | None:
        """A user's record (id, email, ...); None when this token may not read it."""
        answer = self.http.get(f"/api/users/{user_id}/")
        if answer.status_code in (403, 404):
            return None
        answer.raise_for_status()
        user: dict[str, Any] = answer.json()
        return user

    def delete_task(self, task_id: int) -> None:
        answer = self.http.delete(f"/api/tasks/{task_id}/")
        if answer.status_code != 404:
            answer.raise_for_status()
