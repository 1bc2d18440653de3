"""Files: Slack's upload flow (files.getUploadURLExternal, POST the bytes to the upload URL,
files.completeUploadExternal) and the shared files as channels show them."""

from __future__ import annotations

import json
from typing import Any

from bot.sandbox.state import ApiError, WorkspaceState, invalid_arguments


class FileMethods(WorkspaceState):
    def files(self, channel: str) -> list[dict[str, Any]]:
        """Files shared to the channel, in share order: id, name, title, bytes, thread_ts."""
        with self._lock:
            try:
                channel_id = self._channel_id(channel, allow_names=True)
            except ApiError:
                raise KeyError(f"Slack sandbox: no channel {channel!r}") from None
            shared = [u for u in self._uploads.values() if channel_id in u["channels"]]
            shared.sort(key=lambda u: u["shared_order"])
            return [
                {
                    "id": u["id"],
                    "name": u["name"],
                    "title": u["title"],
                    "bytes": u["bytes"],
                    "thread_ts": u["thread_ts"],
                }
                for u in shared
            ]

    def shared_files(self, channel_id: str) -> list[dict[str, Any]]:
        """Files shared to the channel as the messages Slack shows for them: ts, thread_ts,
        and the file's id, name and title."""
        with self._lock:
            return [
                {
                    "ts": u["ts"],
                    "thread_ts": u["thread_ts"],
                    "id": u["id"],
                    "name": u["name"],
                    "title": u["title"],
                }
                for u in sorted(self._uploads.values(), key=lambda u: u["shared_order"] or 0)
                if channel_id in u["channels"]
            ]

    def file_content(self, file_id: str) -> tuple[str, bytes] | None:
        """(name, bytes) of an uploaded file, or None."""
        with self._lock:
            upload = self._uploads.get(file_id)
            if upload is None or upload["bytes"] is None:
                return None
            return str(upload["name"]), bytes(upload["bytes"])

    def _files_get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename, length = params.get("filename"), params.get("length")
        if not filename:
            raise invalid_arguments("[ERROR] missing required field: filename")
        try:
            size = int(length)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise invalid_arguments("[ERROR] missing required field: length") from None
        self._serial += 1
        file_id = f"F{self._serial:08d}"
        self._uploads[file_id] = {
            "id": file_id,
            "name": filename,
            "title": filename,
            "length": size,
            "bytes": None,
            "channels": [],
            "thread_ts": None,
            "shared_order": None,
        }
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _receive_upload(self, file_id: str, data: bytes) -> tuple[int, str]:
        """The upload URL: stores the bytes (Slack answers a plain "OK - <length>")."""
        with self._lock:
            self._calls.append(("upload", {"file_id": file_id, "length": len(data)}))
            upload = self._uploads.get(file_id)
            if upload is None:
                return 404, "Slack sandbox: no such upload"
            upload["bytes"] = data
            self._touch()
            return 200, f"OK - {len(data)}"

    def _files_complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        files = params.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                raise invalid_arguments("[ERROR] files must be a JSON array") from None
        if not isinstance(files, list) or not files:
            raise invalid_arguments("[ERROR] missing required field: files")
        channel_id = None
        if params.get("channel_id"):
            channel_id = self._conversation(params["channel_id"], allow_names=False, member=True)
        thread_ts = params.get("thread_ts") or None
        if thread_ts is not None and channel_id is not None:
            self._message(channel_id, thread_ts)
        done = []
        for item in files:
            upload = self._uploads.get(str(item.get("id")) if isinstance(item, dict) else "")
            if upload is None or upload["bytes"] is None:
                raise ApiError("file_not_found")
            if len(upload["bytes"]) != upload["length"]:
                raise ApiError("file_size_mismatch")
            upload["title"] = item.get("title") or upload["name"]
            if channel_id is not None and channel_id not in upload["channels"]:
                self._serial += 1
                upload["channels"].append(channel_id)
                upload["thread_ts"] = thread_ts
                upload["shared_order"] = self._serial
                upload["ts"] = self._next_ts()
            done.append(
                {
                    "id": upload["id"],
                    "name": upload["name"],
                    "title": upload["title"],
                    "size": upload["length"],
                    "channels": list(upload["channels"]),
                    # Served by the sandbox itself (http.py), so the link opens the file.
                    "permalink": f"{self.base_url}/files/{upload['id']}/{upload['name']}",
                }
            )
        return {"files": done}
