"""DEMO CONNECTOR — not a real CRM, enrichment service or mail server.

A few companies' firmographics, a CRM lead list and an email outbox kept in Gatehouse's own
database (`demo_companies`, `demo_crm_leads`, `demo_outbox`), so the example lead pipeline can
look companies up, "add" leads and "send" intro emails, and undo both, without any outside
service. Replace it with your enrichment provider, your CRM's client and your mail sender.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, insert, select

from pipelines.catalog.connectors.demo_ledger import insert_once, mark_once
from pipelines.catalog.connectors.tables import companies, connector_database, crm_leads, outbox

# (domain, name, employees, industry, country, revenue band)
SEED_COMPANIES = [
    ("brightwave.example", "Brightwave Software", 850, "software", "US", "50M-250M"),
    ("northwind.example", "Northwind Payments", 320, "fintech", "GB", "10M-50M"),
    ("fjord.example", "Fjord Analytics", 140, "software", "NO", "10M-50M"),
    ("helios.example", "Helios Health", 4_200, "healthcare", "US", "250M-1B"),
    ("kestrel.example", "Kestrel Logistics", 1_500, "logistics", "NL", "50M-250M"),
    ("orbital.example", "Orbital Retail", 60_000, "retail", "US", "1B+"),
    ("sunpeak.example", "Sunpeak Manufacturing", 2_400, "manufacturing", "BR", "250M-1B"),
    ("tinybox.example", "Tinybox Studio", 12, "design", "DE", "<1M"),
]

# Mail providers say nothing about the sender's company: never match a company on them.
FREE_MAIL_DOMAINS = frozenset(
    {"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "yahoo.com", "icloud.com"}
)
_LEGAL_SUFFIXES = frozenset(
    {"inc", "incorporated", "ltd", "limited", "llc", "gmbh", "corp", "corporation", "co"}
    | {"plc", "sa", "ag", "bv", "as", "ab", "oy"}
)


@dataclass(frozen=True)
class CompanyRecord:
    domain: str
    name: str
    employees: int
    industry: str
    country: str
    revenue_band: str


@dataclass(frozen=True)
class CrmLeadRecord:
    id: int
    email: str
    company: str
    status: str


@dataclass(frozen=True)
class OutboxRecord:
    id: int
    to_address: str
    subject: str
    status: str


def normalize_company_name(name: str) -> str:
    """`"Brightwave Software, Inc."` → `"brightwave software"`: case, punctuation and legal
    suffixes do not tell companies apart."""
    words = re.sub(r"[^\w\s]", " ", name.casefold()).split()
    while words and words[-1] in _LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words)


def seed_companies() -> None:
    """Insert the demo companies if the table is empty."""
    with connector_database().transaction() as conn:
        if conn.execute(select(func.count()).select_from(companies)).scalar_one() == 0:
            conn.execute(
                insert(companies),
                [
                    {
                        "domain": d,
                        "name": n,
                        "employees": e,
                        "industry": i,
                        "country": c,
                        "revenue_band": r,
                    }
                    for d, n, e, i, c, r in SEED_COMPANIES
                ],
            )


def find_company(name: str, email_domain: str | None = None) -> CompanyRecord | None:
    """By the sender's email domain first (unless it is a free-mail domain), then by name."""
    seed_companies()
    with connector_database().transaction() as conn:
        rows = conn.execute(select(companies).order_by(companies.c.domain)).all()
    domain = (email_domain or "").casefold()
    wanted = normalize_company_name(name)
    match = None
    if domain and domain not in FREE_MAIL_DOMAINS:
        match = next((r for r in rows if r.domain == domain), None)
    if match is None and wanted:
        match = next((r for r in rows if normalize_company_name(r.name) == wanted), None)
    if match is None:
        return None
    return CompanyRecord(
        match.domain, match.name, match.employees, match.industry, match.country, match.revenue_band
    )


def add_lead(
    *,
    email: str,
    company: str,
    role: str,
    score: int,
    note: str,
    idempotency_key: str,
    now: datetime,
) -> CrmLeadRecord:
    """Idempotent by key: a second call with the same key returns the first lead."""
    with connector_database().transaction() as conn:
        lead, _ = insert_once(
            conn,
            crm_leads,
            {
                "idempotency_key": idempotency_key,
                "email": email,
                "company": company,
                "role": role,
                "score": score,
                "note": note,
                "status": "open",
                "added_at": now,
                "removed_at": None,
            },
        )
    return CrmLeadRecord(lead.id, lead.email, lead.company, lead.status)


def remove_lead(lead_id: int, *, now: datetime) -> CrmLeadRecord:
    with connector_database().transaction() as conn:
        row, _ = mark_once(
            conn,
            crm_leads,
            lead_id,
            status="removed",
            at_column="removed_at",
            now=now,
            what="demo CRM lead",
        )
    return CrmLeadRecord(row.id, row.email, row.company, "removed")


def send_email(
    *, to_address: str, subject: str, body: str, idempotency_key: str, now: datetime
) -> OutboxRecord:
    """ "Send" by writing to the outbox. Idempotent by key: a second call returns the first email."""
    with connector_database().transaction() as conn:
        email, _ = insert_once(
            conn,
            outbox,
            {
                "idempotency_key": idempotency_key,
                "to_address": to_address,
                "subject": subject,
                "body": body,
                "status": "sent",
                "sent_at": now,
                "recalled_at": None,
            },
        )
    return OutboxRecord(email.id, email.to_address, email.subject, email.status)


def recall_email(email_id: int, *, now: datetime) -> OutboxRecord:
    """Mark a sent email recalled (a real mail system would send a follow-up or retract it)."""
    with connector_database().transaction() as conn:
        row, _ = mark_once(
            conn,
            outbox,
            email_id,
            status="recalled",
            at_column="recalled_at",
            now=now,
            what="demo outbox email",
        )
    return OutboxRecord(row.id, row.to_address, row.subject, "recalled")
