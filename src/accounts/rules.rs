//! The role table of SPEC.md as pure functions: who may do what in a team.
//! No I/O, no clock; every row of the table is decided here and tested
//! alone. (A non-member never reaches these: they get 404 first, A3.)

use crate::store::Role;

/// Invite someone with `invited` (I1): the Owner as admin or member, an
/// Admin only as member, a Member never.
pub fn can_invite(actor: Role, invited: Role) -> bool {
    match actor {
        Role::Owner => invited != Role::Owner,
        Role::Admin => invited == Role::Member,
        Role::Member => false,
    }
}

/// List and revoke pending invites.
pub fn can_manage_invites(actor: Role) -> bool {
    actor != Role::Member
}

/// Remove `target` (L2): the Owner removes Admins and Members, an Admin
/// only Members. Nobody removes the Owner.
pub fn can_remove(actor: Role, target: Role) -> bool {
    match (actor, target) {
        (_, Role::Owner) => false,
        (Role::Owner, _) => true,
        (Role::Admin, Role::Member) => true,
        _ => false,
    }
}

/// Change a member's role between admin and member: the Owner only.
pub fn can_change_role(actor: Role, target: Role, new: Role) -> bool {
    actor == Role::Owner && target != Role::Owner && new != Role::Owner
}

/// Create and delete team keys (K3).
pub fn can_manage_keys(actor: Role) -> bool {
    actor != Role::Member
}

/// Set a member's spend limit (Q1): the Owner anyone's, an Admin only a
/// Member's.
pub fn can_set_member_limits(actor: Role, target: Role) -> bool {
    match actor {
        Role::Owner => true,
        Role::Admin => target == Role::Member,
        Role::Member => false,
    }
}

/// Balance, deposits, ledger, warning (billing).
pub fn can_see_billing(actor: Role) -> bool {
    actor == Role::Owner
}

/// Usage of the whole team, by member and by key.
pub fn can_see_team_usage(actor: Role) -> bool {
    actor != Role::Member
}

/// Delete the team (D1).
pub fn can_delete_team(actor: Role) -> bool {
    actor == Role::Owner
}

#[cfg(test)]
mod tests {
    use super::*;
    use Role::*;

    #[test]
    fn the_role_table() {
        assert!(can_invite(Owner, Admin) && can_invite(Owner, Member));
        assert!(!can_invite(Admin, Admin) && can_invite(Admin, Member));
        assert!(!can_invite(Member, Member));
        assert!(!can_invite(Owner, Owner));
        assert!(can_remove(Owner, Admin) && can_remove(Owner, Member));
        assert!(can_remove(Admin, Member) && !can_remove(Admin, Admin));
        assert!(!can_remove(Member, Member) && !can_remove(Admin, Owner));
        assert!(can_change_role(Owner, Member, Admin) && can_change_role(Owner, Admin, Member));
        assert!(!can_change_role(Admin, Member, Admin) && !can_change_role(Owner, Member, Owner));
        assert!(can_manage_keys(Owner) && can_manage_keys(Admin) && !can_manage_keys(Member));
        assert!(can_set_member_limits(Owner, Owner) && can_set_member_limits(Owner, Admin));
        assert!(can_set_member_limits(Admin, Member) && !can_set_member_limits(Admin, Admin));
        assert!(!can_set_member_limits(Admin, Owner) && !can_set_member_limits(Member, Member));
        assert!(can_see_billing(Owner) && !can_see_billing(Admin) && !can_see_billing(Member));
        assert!(can_see_team_usage(Admin) && !can_see_team_usage(Member));
        assert!(can_delete_team(Owner) && !can_delete_team(Admin));
    }
}
