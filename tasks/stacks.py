"""Terraform stacks as flows name and check them before any task runs: the stack directory (inside
infra/terraform only), its declared variables, the request's variables against them, a stack's slug."""

from tools.terraform import TERRAFORM_DIR, slug
from tools.terraform_workspace import check_variables, declared_variables, list_stacks, resolve_stack

__all__ = ["TERRAFORM_DIR", "check_variables", "declared_variables", "list_stacks", "resolve_stack", "slug"]
