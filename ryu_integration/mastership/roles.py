"""Per-version OpenFlow role messages: how each version asks a switch for a role.

OpenFlow 1.2-1.5 use OFPT_ROLE_REQUEST with `generation_id = term` (the switch fences a stale
master); 1.4+ also tell a demoted master at once with OFPT_ROLE_STATUS; 1.0 uses the Nicira role
extension (NXT_ROLE_REQUEST), which has no generation_id: the switch cannot fence, so the state
machine waits for the previous master to stop before claiming (`MastershipFSM(fenced=False)`).
Each version's wire details live in one `RoleCodec` here; the state machine sees none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..compat import (
    ofproto_v1_0,
    ofproto_v1_0_parser,
    ofproto_v1_2,
    ofproto_v1_3,
    ofproto_v1_4,
    ofproto_v1_5,
)
from .fsm import Role


@dataclass(frozen=True)
class RoleCodec:
    """How one OpenFlow version asks for a role and tells what happened to it.

    `fenced`: the switch compares generation_ids (1.2+); `codes`: role -> wire value;
    `request(datapath, code, generation_id)` builds the request; `is_slave` and `stale` are the
    (error type, code) pairs of "refused: you are slave" and "refused: old generation_id"."""

    name: str
    fenced: bool
    codes: dict[Role, int]
    request: Callable[[Any, int, int], Any]
    is_slave: tuple[int, int]
    stale: tuple[int, int] | None
    role_failed_type: int | None

    def role_of(self, code: int) -> Role:
        """The role a reply or status names (anything unknown reads as EQUAL)."""
        return next((role for role, c in self.codes.items() if c == code), Role.EQUAL)


def _standard(name: str, ofp: Any) -> RoleCodec:
    """OpenFlow 1.2-1.5: OFPT_ROLE_REQUEST / ROLE_REPLY with a generation_id."""
    return RoleCodec(
        name, True,
        {Role.MASTER: ofp.OFPCR_ROLE_MASTER, Role.SLAVE: ofp.OFPCR_ROLE_SLAVE,
         Role.EQUAL: ofp.OFPCR_ROLE_EQUAL},
        # keywords: 1.5 puts `short_id` between the two
        lambda dp, code, generation_id: dp.ofproto_parser.OFPRoleRequest(
            dp, role=code, generation_id=generation_id),
        (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE),
        (ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE),
        ofp.OFPET_ROLE_REQUEST_FAILED)


def _nicira(ofp: Any) -> RoleCodec:
    """OpenFlow 1.0: the Nicira extension's NXT_ROLE_REQUEST (other/master/slave), no
    generation_id; a slave's writes are refused with OFPBRC_EPERM."""
    return RoleCodec(
        "1.0", False,
        {Role.MASTER: ofp.NX_ROLE_MASTER, Role.SLAVE: ofp.NX_ROLE_SLAVE,
         Role.EQUAL: ofp.NX_ROLE_OTHER},
        lambda dp, code, _generation_id: ofproto_v1_0_parser.NXTRoleRequest(dp, code),
        (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM), None, None)


#: OpenFlow version number -> its role messages (1.1 has no roles and is not offered).
CODECS: dict[int, RoleCodec] = {
    ofproto_v1_0.OFP_VERSION: _nicira(ofproto_v1_0),
    ofproto_v1_2.OFP_VERSION: _standard("1.2", ofproto_v1_2),
    ofproto_v1_3.OFP_VERSION: _standard("1.3", ofproto_v1_3),
    ofproto_v1_4.OFP_VERSION: _standard("1.4", ofproto_v1_4),
    ofproto_v1_5.OFP_VERSION: _standard("1.5", ofproto_v1_5),
}
#: OFPT_ROLE_STATUS reason code (1.4+) -> the word the logs use for it.
ROLE_STATUS_REASONS = {ofproto_v1_4.OFPCRR_MASTER_REQUEST: "master_request",
                       ofproto_v1_4.OFPCRR_CONFIG: "config",
                       ofproto_v1_4.OFPCRR_EXPERIMENTER: "experimenter"}


def codec_of(dp: Any) -> RoleCodec:
    """The role messages of a datapath's negotiated OpenFlow version."""
    return CODECS[dp.ofproto.OFP_VERSION]
