"""SFTP (SSH File Transfer Protocol v3, OpenSSH's dialect) through paramiko."""

from drivers.sftp._driver import SFTP_PORT, SftpDriver
from drivers.sftp._shell import IDENTITY_ENV, KNOWN_HOSTS_ENV, SftpStatus

__all__ = ["IDENTITY_ENV", "KNOWN_HOSTS_ENV", "SFTP_PORT", "SftpDriver", "SftpStatus"]
