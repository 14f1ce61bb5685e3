"""leviathan.models"""
